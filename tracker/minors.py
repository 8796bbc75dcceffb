"""Children under 13 (privacy policy, section 7): recognised in an import row, and refused.

A row marks a child when any of these columns (or JSON keys) says so:
- `age`: a whole number under 13;
- `under_13` or `minor`: a true value (yes, true, y, 1, x; JSON true). `minor` does not say
  which age, so it is refused too: refusing costs one address, accepting could hold a child's;
- `birth_date`, `date_of_birth` or `dob`: a date (YYYY-MM-DD) less than 13 years before the
  day of the import.
A value in one of them that cannot be read (age "twelve", a birth date "12/03/2015") is an
error of the row as well: the import cannot tell a child from an adult. An empty value says
nothing. What is reported is the line and which column, never a value of the row.
"""

from __future__ import annotations

from datetime import date

MINIMUM_AGE = 13
AGE_COLUMNS = ("age",)
FLAG_COLUMNS = ("under_13", "minor")
BIRTH_DATE_COLUMNS = ("birth_date", "date_of_birth", "dob")
_TRUE = {"yes", "true", "y", "1", "x"}
_FALSE = {"no", "false", "n", "0", ""}


def _thirteenth_birthday(born: date) -> date:
    try:
        return born.replace(year=born.year + MINIMUM_AGE)
    except ValueError:  # born on 29 February: 13 on 1 March of a common year
        return date(born.year + MINIMUM_AGE, 3, 1)


def child_problem(record: dict, today: date) -> str | None:
    """Why the row is refused as a child's (or as unreadable on age), or None.

    The text names the column only: nothing about the person may be stored or shown.
    """
    refused = "refused: marks a child under 13 (column {}); nothing about this person is kept"
    for column in AGE_COLUMNS:
        value = record.get(column)
        if value is None or value == "":
            continue
        text = str(value).strip()
        if isinstance(value, bool) or not (text.isascii() and text.isdigit()):
            return f"column {column} must be a whole number of years (or empty)"
        if int(text) < MINIMUM_AGE:
            return refused.format(column)
    for column in FLAG_COLUMNS:
        value = record.get(column)
        if value is None or value is False:
            continue
        text = "yes" if value is True else str(value).strip().lower()
        if text in _TRUE:
            return refused.format(column)
        if text not in _FALSE:
            return f"column {column} must be yes or no (or empty)"
    for column in BIRTH_DATE_COLUMNS:
        value = record.get(column)
        if value is None or value == "":
            continue
        try:
            born = date.fromisoformat(str(value).strip())
        except ValueError:
            born = None
        if born is None or len(str(value).strip()) != 10:
            return f"column {column} must be a date written YYYY-MM-DD (or empty)"
        if _thirteenth_birthday(born) > today:
            return refused.format(column)
    return None
