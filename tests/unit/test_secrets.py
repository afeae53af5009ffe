import pickle

import pytest

from opsgate.sensitive import Redactor, Secret, SecretUrl, mask_url


def test_secret_never_prints() -> None:
    s = Secret("hunter2-canary")
    shown_forms = (str(s), repr(s), f"{s}", f"{s!r}", "%s" % (s,), str([s]), str({"k": s}))  # noqa: UP031
    for shown in shown_forms:
        assert "hunter2" not in shown
    assert s.reveal() == "hunter2-canary"


def test_secret_cannot_be_pickled_or_mutated() -> None:
    s = Secret("x-canary")
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(AttributeError):
        s._value = "y"


def test_secret_equality_compares_values_without_showing_them() -> None:
    assert Secret("abc") == Secret("abc")
    assert Secret("abc") != Secret("abd")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:p4ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgres://h/db?sslmode=require&password=zz", "postgres://h/db?sslmode=require&password=***"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_secret_url_repr_is_masked() -> None:
    u = SecretUrl("postgresql://admin:topsecret-canary@db.example/app")
    assert "topsecret" not in repr(u) and "topsecret" not in str(u)
    assert u.password == "topsecret-canary"


def test_redactor_replaces_longest_first() -> None:
    r = Redactor(["secret", "secret-long-value"])
    assert r("a secret-long-value and a secret") == "a *** and a ***"



@pytest.mark.parametrize(("text", "shown"), [
    ("password abc", "password ***"),
    ("postgresql://u:abc@h/db", "postgresql://u:***@h/db"),
    ("host=h password=abc", "host=h password=***"),
    ("abcdef and xabc stay", "abcdef and xabc stay"),
])
def test_a_short_secret_is_masked_where_it_stands_alone(text: str, shown: str) -> None:
    assert Redactor(["abc"])(text) == shown


@pytest.mark.parametrize(("conninfo", "masked"), [
    ("host=db.example user=u password=kw-canary dbname=app",
     "host=db.example user=u password=*** dbname=app"),
    ("host=h password='two words' dbname=d", "host=h password=*** dbname=d"),
    ("host=h dbname=d", "host=h dbname=d"),
])
def test_keyword_conninfo_is_masked(conninfo: str, masked: str) -> None:
    u = SecretUrl(conninfo)
    assert u.masked == masked and str(u) == masked and masked in repr(u)
    assert "canary" not in u.without_password and "two words" not in u.without_password


def test_keyword_conninfo_password_reaches_the_tools_separately() -> None:
    u = SecretUrl("host=h user=u password='p w' dbname=d")
    assert u.password == "p w"
    assert u.without_password == "host=h user=u dbname=d"


def test_unparseable_connection_string_is_hidden_whole() -> None:
    assert mask_url("host='unterminated password=x") == "***"


def test_settings_source_keeps_no_secret() -> None:
    from opsgate.config import Settings

    s = Settings.load(environ={"ADMIN_PASSWORD": "src-canary-pw",
                               "DATABASE_URL": "postgresql://u:src-canary-db@h/d",
                               "BLOB_READ_WRITE_TOKEN": "src-canary-token"})
    shown = str(dict(s.source)) + repr(s)
    assert "src-canary" not in shown
    assert s.is_set("ADMIN_PASSWORD") and s.is_set("BLOB_READ_WRITE_TOKEN")


@pytest.mark.parametrize(
    ("url", "bare", "password"),
    [
        ("postgresql://u:p4ss@h:5432/db", "postgresql://u@h:5432/db", "p4ss"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require", "p@ss"),
        ("postgres://u@h/db?password=zz&sslmode=require", "postgres://u@h/db?sslmode=require", "zz"),
        ("postgresql://h/db", "postgresql://h/db", None),
    ],
)
def test_url_without_password_for_command_lines(url: str, bare: str, password: str | None) -> None:
    u = SecretUrl(url)
    assert u.without_password == bare
    assert u.password == password


@pytest.mark.parametrize(("url", "masked", "secret"), [
    ("postgresql://opsgate:abc/Secr3tTail@127.0.0.1:5/app",
     "postgresql://opsgate:***@127.0.0.1:5/app", "Secr3tTail"),
    ("postgresql://opsgate:Cn@ry#Pw42@127.0.0.1:5/app?sslmode=require",
     "postgresql://opsgate:***@127.0.0.1:5/app?sslmode=require", "Pw42"),
    ("http://admin:BaseCnry_2718@127.0.0.1:5/?x-vercel-protection-bypass=BypassCnry_1618",
     "http://admin:***@127.0.0.1:5/?x-vercel-protection-bypass=***", "Cnry"),
])
def test_passwords_with_url_delimiters_and_secret_parameters_are_masked(
    url: str, masked: str, secret: str
) -> None:
    assert mask_url(url) == masked
    assert secret not in mask_url(url)


def test_the_redactor_knows_every_piece_of_a_url_password_and_the_base_url_secrets() -> None:
    from opsgate.config import Settings

    s = Settings.load(environ={
        "DATABASE_URL": "postgresql://opsgate:Cn@ry#Pw42@127.0.0.1:5/app",
        "OPS_BASE_URL": "http://admin:BaseCnry_2718@h/?x-vercel-protection-bypass=BypassCnry_1"})
    shown = s.redactor()("host 'ry#Pw42@127.0.0.1' BaseCnry_2718 BypassCnry_1 Cn@ry#Pw42")
    assert "Pw42" not in shown and "Cnry" not in shown
    assert "BaseCnry" not in str(s.target_identity()) + str(dict(s.source))
