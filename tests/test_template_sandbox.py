"""Campaign templates run in Jinja's sandbox: no code, no files, no endless render.

Write access to a campaign (or to its row in the database) must not become code execution or
the power to read the signing key. Each attempt is refused at `campaign create` with file and
line, storing nothing, and again wherever a stored template is rendered.
"""

from __future__ import annotations

import pytest

from mailer.sending import send_campaign
from tracker.errors import TemplateProblem

# Each reaches (or would reach) Python internals from a template; on a plain Jinja
# environment every one of them renders, most of them running code or reading files.
ESCAPES = [
    "{{ joiner.__init__.__globals__.os.popen('id').read() }}",
    "{{ self.__init__.__globals__.__builtins__.open('/etc/hostname').read() }}",
    "{{ cycler.__init__.__globals__.os.getcwd() }}",
    "{{ lipsum.__globals__['os'].getcwd() }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ recipient.__class__ }}",
    "{{ '{0.__class__}'.format(recipient) }}",
    "{{ '{0.__init__.__globals__}'.format(joiner) }}",
    "{{ lipsum|attr('__globals__') }}",
    "{{ recipient.attributes.update({'x': 1}) }}",  # the immutable sandbox: no changing data
]
REFUSALS = ("SecurityError", "is unsafe")
HTML_BEFORE = "<html><body>\n<p>Hello</p>\n"  # the attempt stands on line 3


async def test_escapes_are_refused_at_create_with_file_and_line(make_campaign, pool):
    problems = []
    for escape in ESCAPES:
        with pytest.raises(TemplateProblem) as error:
            await make_campaign(HTML_BEFORE + escape + "\n</body></html>\n")
        problems.append(str(error.value))
    for escape, problem in zip(ESCAPES, problems, strict=True):
        assert "c.html:3:" in problem and any(r in problem for r in REFUSALS), (escape, problem)
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


@pytest.mark.parametrize("part", ["subject", "text"])
async def test_subject_and_text_templates_are_sandboxed(make_campaign, pool, part):
    escape = "{{ joiner.__init__.__globals__.os.getcwd() }}"
    kwargs = {"subject": escape} if part == "subject" else {"text": "Hi\n\n" + escape + "\n"}
    with pytest.raises(TemplateProblem, match=rf"{'subject:1' if part == 'subject' else 'c.txt:3'}"
                       r": SecurityError"):  # fmt: skip
        await make_campaign("<p>Hello</p>", **kwargs)
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_a_shell_command_does_not_run(make_campaign, pool, tmp_path, add_recipients):
    """Rendered for everyone on the list, by the template and its layout twin: nothing runs."""
    await add_recipients("email\na@example.com\nb@example.com\n")
    marker = tmp_path / "ran"
    escape = f"{{{{ joiner.__init__.__globals__.os.popen('touch {marker}').read() }}}}"
    with pytest.raises(TemplateProblem, match=r"c\.html:3: SecurityError"):
        await make_campaign(HTML_BEFORE + escape)
    assert not marker.exists()
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_the_signing_key_cannot_be_read(make_campaign, pool, tmp_path):
    key_file = tmp_path / "secret.key"
    key_file.write_text("the-signing-key")
    escape = f"{{{{ self.__init__.__globals__.__builtins__.open('{key_file}').read() }}}}"
    with pytest.raises(TemplateProblem) as error:
        await make_campaign(HTML_BEFORE + escape)
    assert "c.html:3: SecurityError" in str(error.value)
    assert "the-signing-key" not in str(error.value)
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        # The sandbox's own limit: no range longer than MAX_RANGE (100,000).
        ("{{ range(10**9) | length }}", "OverflowError: Range too big"),
        # 2,000,000 loop steps: over the render budget, which stops the loop on its line.
        (
            "{% for i in range(2000) %}{% for j in range(1000) %}.{% endfor %}{% endfor %}",
            "RenderLimit: more than 1,000,000 steps",
        ),
        # Loops that write too much: 100,000 × 200 characters.
        ("{% for i in range(100000) %}{{ 'x' * 200 }}{% endfor %}", "RenderLimit: more than"),
        ("{{ 'x' * 10**9 }}", "RenderLimit: a repetition longer than"),
        ("{{ 7 ** 100000000 }}", "RenderLimit: 7 ** 100000000 is too large"),
        (
            "{% set n = namespace(x=3) %}{% for i in range(30) %}{% set n.x = n.x * n.x %}"
            "{% endfor %}{{ n.x > 0 }}",
            "RenderLimit: a product too large",
        ),
    ],
)
async def test_a_runaway_template_is_stopped_on_its_line(make_campaign, pool, html, expected):
    with pytest.raises(TemplateProblem) as error:
        await make_campaign(HTML_BEFORE + html + "\n</body></html>\n")
    assert f"c.html:3: {expected}" in str(error.value)
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


async def store_hostile_campaign(pool, html: str) -> None:
    """A template written straight into the database, past `campaign create`'s check."""
    await pool.execute(
        "INSERT INTO campaigns (name, subject_template, from_address, html_template,"
        " html_filename) VALUES ('hostile', 'Hi', 'news@example.com', $1, 'hostile.html')",
        html,
    )


async def test_a_hostile_template_in_the_database_is_refused_at_send(
    pool, settings, mailbox, tmp_path, add_recipients
):
    await add_recipients("email\na@example.com\n")
    marker = tmp_path / "ran"
    await store_hostile_campaign(
        pool, HTML_BEFORE + f"{{{{ joiner.__init__.__globals__.os.popen('touch {marker}') }}}}"
    )
    with pytest.raises(TemplateProblem, match=r"hostile\.html:3: SecurityError"):
        await send_campaign(pool, settings, "hostile")
    assert not marker.exists()
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert mailbox.messages() == []


async def test_a_runaway_template_is_not_tried_for_everyone(make_campaign, pool, add_recipients):
    """Each try spends the whole budget: one is enough to refuse the campaign."""
    await add_recipients("email\na@example.com\nb@example.com\nc@example.com\n")
    with pytest.raises(TemplateProblem) as error:
        await make_campaign(
            HTML_BEFORE + "{% for i in range(99999) %}{% for j in range(99) %}{% endfor %}"
            "{% endfor %}"
        )
    assert "c.html:3: RenderLimit" in str(error.value)
    assert "for 1 recipient(s): a@example.com" in str(error.value)
    assert "the others were not checked" in str(error.value)
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_what_templates_may_do_still_works(make_campaign, add_recipients, deliver, mailbox):
    """Filters, loops, macros, namespaces, string methods and formatting are all allowed."""
    await add_recipients("email,name,city\nann@example.com,Ann,Oslo\n")
    html = (
        "<p>{% macro em(x) %}<i>{{ x }}</i>{% endmacro %}{{ em(recipient.name|upper) }}"
        "{% set ns = namespace(total=0) %}{% for n in range(1, 4) %}"
        "{% set ns.total = ns.total + n %}{{ loop.cycle('a', 'b') }}{% endfor %}={{ ns.total }} "
        "{{ '%s in %s' % (recipient.name, recipient.attributes.city) }}"
        " {{ '{:,}'.format(1234567) }}"
        " {{ recipient.email.split('@')[1] }} {{ recipient.attributes|dictsort|length }}</p>"
    )
    await make_campaign(html)
    await deliver("c")
    (message,) = mailbox.messages()
    assert (
        "<p><i>ANN</i>aba=6 Ann in Oslo 1,234,567 example.com 1</p>"
        in message.get_body(("html",)).get_content()
    )
