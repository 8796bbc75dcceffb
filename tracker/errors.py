"""User-facing errors of fairclick.

FairclickError          a mistake the user can fix; printed as one line, never a traceback
├── ConfigError         a missing or malformed setting
├── ImportRowsError     bad rows in a recipients file (all of them, with line numbers)
├── TemplateProblem     a campaign template that does not compile or render
├── NotFound            a campaign or recipient that does not exist
├── BadArgument         a report asked for something it cannot give (a bucket, a range)
├── Conflict            a change the current state does not allow (resume a cancelled campaign)
└── PendingMigrations   the database schema is behind the code
"""


class FairclickError(Exception):
    """An error caused by input or configuration, reported to the user as is."""


class ConfigError(FairclickError):
    pass


class ImportRowsError(FairclickError):
    def __init__(self, path: str, problems: list[tuple[int, str]]):
        self.path = path
        self.problems = problems
        lines = [f"{path}:{line}: {problem}" for line, problem in problems]
        super().__init__(
            f"{len(problems)} invalid row(s) in {path}; nothing was imported:\n" + "\n".join(lines)
        )


class TemplateProblem(FairclickError):
    pass


class NotFound(FairclickError):
    pass


class BadArgument(FairclickError, ValueError):
    """A value a caller chose that a report cannot take (an API answers it with a 400)."""


class PendingMigrations(FairclickError):
    pass


class ErasureBusy(FairclickError):
    """Erasure could not take its locks in time (long writes to clicks): nothing was erased."""


class Conflict(FairclickError):
    """A change the thing's current state does not allow (an API answers it with a 409)."""
