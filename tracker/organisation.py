"""Who sends the mail: the organisation's name, postal address and privacy policy.

Recipients' pages show it in their footer, campaign templates read it as `organisation`,
and `campaign create` warns when a template carries no postal address (CAN-SPAM asks
commercial mail for one). An unset value is left out, never shown empty or made up.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import cached_property

from jinja2 import meta, nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tracker.settings import Settings

SETTING_NAMES = {
    "name": "FAIRCLICK_ORGANISATION_NAME",
    "address": "FAIRCLICK_ORGANISATION_ADDRESS",
    "privacy_policy_url": "FAIRCLICK_PRIVACY_POLICY_URL",
}


@dataclass(frozen=True)
class Organisation:
    name: str | None = None
    address: str | None = None  # lines separated by "\n"
    privacy_policy_url: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> Organisation:
        return cls(
            settings.organisation_name,
            settings.organisation_address,
            settings.privacy_policy_url,
        )

    @property
    def address_lines(self) -> list[str]:
        return self.address.split("\n") if self.address else []

    def unset(self) -> list[str]:
        """The names of the settings left unset, in the order of SETTING_NAMES."""
        return [variable for key, variable in SETTING_NAMES.items() if not getattr(self, key)]

    @cached_property
    def template_values(self) -> dict:
        """What campaign templates see as `organisation` (made once: every message reads it;
        the sandbox lets no template change it). Unset values are empty strings, so
        `{% if organisation.address %}` works and nothing renders as "None"."""
        return {
            "name": self.name or "",
            "address": self.address or "",
            "address_lines": tuple(self.address_lines),
            "privacy_policy_url": self.privacy_policy_url or "",
        }


NO_ORGANISATION = Organisation()


def unset_warning(organisation: Organisation) -> str | None:
    """One line naming the settings that are unset, or None when all are set."""
    unset = organisation.unset()
    if not unset:
        return None
    return (
        f"{', '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set: recipients' pages "
        "leave it out and campaign templates see it empty (CAN-SPAM: commercial mail must "
        "carry a postal address)"
    )


_PARSER = ImmutableSandboxedEnvironment()  # parses only, renders nothing


def _reads_address(source: str) -> bool:
    """Whether a template reads organisation.address (or .address_lines)."""
    try:
        tree = _PARSER.parse(source)
    except TemplateSyntaxError:
        return False
    if "organisation" not in meta.find_undeclared_variables(tree):
        return False
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if (
            isinstance(target, nodes.Name)
            and target.name == "organisation"
            and key in ("address", "address_lines")
        ):
            return True
    return False


def _words(text: str) -> str:
    return " ".join(text.split()).casefold()


def carries_address(source: str, address: str | None, *, is_html: bool) -> bool:
    """Whether mail from a campaign template carries the postal address: the template reads
    organisation.address (and it is set), or writes every line of the configured address."""
    if not address:
        return False  # {{ organisation.address }} renders empty; no text to look for
    if _reads_address(source):
        return True
    written = _words(html.unescape(source) if is_html else source)
    return all(_words(line) in written for line in address.split("\n"))


def missing_address_warning(
    organisation: Organisation, templates: list[tuple[str, str, bool]]
) -> str | None:
    """One line naming the templates (file, source, is_html) that carry no postal address."""
    missing = [
        filename
        for filename, source, is_html in templates
        if not carries_address(source, organisation.address, is_html=is_html)
    ]
    if not missing:
        return None
    where = "in each" if len(missing) > 1 else "in it"
    how = f"write {{{{ organisation.address }}}} {where}"
    if not organisation.address:
        how = f"set FAIRCLICK_ORGANISATION_ADDRESS and {how}"
    return (
        f"warning: {' and '.join(missing)} carr{'y' if len(missing) > 1 else 'ies'} no postal "
        f"address; commercial mail must have one (CAN-SPAM): {how}"
    )
