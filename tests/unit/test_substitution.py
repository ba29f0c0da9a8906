"""`${VAR}`/`${VAR:-default}` in config values and `admin_token_file`: no secret in the YAML."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balancer.config.parse import parse_config
from balancer.config.yamltree import ConfigError
from balancer.ops.config_file import load_config

ROOT = Path(__file__).resolve().parents[2]
BASE = "listen: 127.0.0.1:8080\npools:\n  default:\n    backends: [http://127.0.0.1:8101]\n"


def problems(text: str, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml", env=env)
    return [str(p) for p in info.value.problems]


def test_a_plain_value_is_typed_after_substitution_a_quoted_one_stays_a_string() -> None:
    text = BASE + "    max_connections: ${MAXC}\n    max_idle: ${IDLE:-3}\n" \
                  "admin_token: \"${TOKEN}\"\nlisten: ${LISTEN}\n"
    text = text.replace("listen: 127.0.0.1:8080\n", "", 1)
    config = parse_config(text, "x.yaml", env={"MAXC": "10", "TOKEN": "0123456789abcdef0",
                                               "LISTEN": "127.0.0.1:9999"})
    pool = config.pool("default")
    assert (pool.max_connections, pool.max_idle) == (10, 3)
    assert config.admin_token == "0123456789abcdef0"
    assert [a.key for a in config.listen] == ["127.0.0.1:9999"]


def test_the_default_applies_when_unset_or_empty() -> None:
    text = BASE + "    max_idle: ${IDLE:-4}\n"
    assert parse_config(text, env={}).pool("default").max_idle == 4
    assert parse_config(text, env={"IDLE": ""}).pool("default").max_idle == 4
    assert parse_config(text, env={"IDLE": "5"}).pool("default").max_idle == 5


def test_an_unset_variable_without_default_is_located() -> None:
    text = BASE + "access_log:\n  path: /var/log/${APP}/${LOGNAME_X}.log\n"
    assert problems(text, {"APP": "lb"}) == [
        "x.yaml:6:9: access_log.path: environment variable 'LOGNAME_X' is not set "
        "(set it, or give a default: ${LOGNAME_X:-value})"]


def test_malformed_references_and_the_escape() -> None:
    assert problems(BASE + "access_log: {path: \"/a/${1X}\"}\n", {})[0].startswith(
        "x.yaml:5:20: access_log.path: malformed '${'")
    config = parse_config(BASE + "access_log: {path: \"/a/$${HOME}\"}\n", env={"HOME": "/h"})
    assert config.access_log is not None and config.access_log.path == "/a/${HOME}"


def test_a_value_is_substituted_once_even_when_it_contains_a_reference() -> None:
    text = BASE + "access_log:\n  path: &p \"${P}\"\nhealth: {check_path: *p}\n"
    config = parse_config(text, env={"P": "/x/${Q}", "Q": "no"})
    assert config.access_log is not None and config.access_log.path == "/x/${Q}"
    assert config.health.check_path == "/x/${Q}"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1))
def test_any_environment_value_arrives_verbatim_in_a_quoted_value(value: str) -> None:
    text = BASE + "access_log: {path: \"${P}\"}\n"
    config = parse_config(text, env={"P": value})
    assert config.access_log is not None and config.access_log.path == value


@given(st.text(max_size=40))
def test_any_scalar_text_is_a_config_or_located_problems_never_a_crash(raw: str) -> None:
    text = BASE + "access_log:\n  path: " + _double_quoted(raw) + "\n"
    try:
        parse_config(text, "x.yaml", env={"A": "1"})
    except ConfigError as exc:
        assert all(str(p).startswith("x.yaml:") for p in exc.problems)


def _double_quoted(raw: str) -> str:
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}"
                         for c in raw) + '"'


def test_admin_token_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("s3cret-token-0123456789\n")
    path = tmp_path / "lb.yaml"
    path.write_text(BASE + "admin_token_file: secrets/token\n")
    assert load_config(str(path)).admin_token == "s3cret-token-0123456789"


def test_admin_token_file_problems_are_located_and_never_echo_the_secret(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("tooshort-secret\n")
    path = tmp_path / "lb.yaml"
    for tail, expected in [
        ("admin_token_file: nothere\n", "5:19: admin_token_file: cannot read nothere: "
                                        "No such file or directory"),
        ("admin_token_file: short\n", "5:19: admin_token_file: the content of short: an admin "
                                      "token must be a string of at least 16 printable"),
        ("admin_token: 0123456789abcdef0\nadmin_token_file: short\n",
         "6:19: admin_token_file: set admin_token or admin_token_file, not both"),
    ]:
        path.write_text(BASE + tail)
        with pytest.raises(ConfigError) as info:
            load_config(str(path))
        assert str(info.value).startswith(f"{path}:{expected}")
        assert "tooshort-secret" not in str(info.value)




# -- mutation testing, after merging round 3 (bench/results/mutation.md) ---------------------

def test_a_list_item_is_substituted_and_its_problem_located_by_index() -> None:
    text = ("listen: 127.0.0.1:8080\npools:\n  default:\n"
            "    backends: [http://127.0.0.1:8101, \"${B}\"]\n")
    config = parse_config(text, env={"B": "http://127.0.0.1:8102"})
    assert [b.key for b in config.pool("default").backends] == [
        "127.0.0.1:8101", "127.0.0.1:8102"]
    assert problems(text, {}) == [
        "x.yaml:4:39: pools.default.backends[1]: environment variable 'B' is not set "
        "(set it, or give a default: ${B:-value})"]


def test_the_malformed_reference_message_in_full() -> None:
    assert problems(BASE + "access_log: {path: \"/a/${1X}\"}\n", {}) == [
        "x.yaml:5:20: access_log.path: malformed '${': expected ${NAME} or ${NAME:-default} "
        "(write $${ for a literal ${)"]
