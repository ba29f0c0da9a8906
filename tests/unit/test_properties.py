"""Property tests (hypothesis): the config parser, the path normaliser and the classifier take
anything without a traceback; normalising is idempotent."""

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancer.balancing.classify import BadTarget, Classifier, path_template, routed_path
from balancer.balancing.costs import CostModel
from balancer.config.model import TOP_KEYS, Config
from balancer.config.parse import parse_config
from balancer.config.yamltree import ConfigError
from tests.helpers import ROOT
from tests.unit.test_classify import Facts

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
DEFAULT_CONFIG = (ROOT / "config" / "balancer.yaml").read_text()

KEYS = st.sampled_from([*TOP_KEYS, "backends", "kind", "rules", "path", "class", "classes",
                        "default", "connect", "weight", "address", "pin", "methods", "x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True), st.text(max_size=20),
                    st.sampled_from(["127.0.0.1:0", "http://127.0.0.1:1", "unix:/tmp/s",
                                     "2s", "10MiB", "io", "heavy_cpu", "/api/**", "-1ms"]))
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(KEYS, children, max_size=5)),
    max_leaves=30)


def parses_or_locates(text: str) -> None:
    try:
        config = parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert str(problem).startswith("fuzz.yaml:")
            assert problem.line >= 1 and problem.col >= 1
    else:
        assert isinstance(config, Config)


@SETTINGS
@given(DOCUMENTS)
def test_any_yaml_document_is_a_config_or_located_errors(document: Any) -> None:
    parses_or_locates(yaml.safe_dump(document))


@SETTINGS
@given(st.text(max_size=300))
def test_any_text_is_a_config_or_located_errors(text: str) -> None:
    parses_or_locates(text)


@SETTINGS
@given(st.integers(0, len(DEFAULT_CONFIG) - 1), st.integers(0, len(DEFAULT_CONFIG)),
       st.text(max_size=12))
def test_any_edit_of_the_shipped_config_is_a_config_or_located_errors(
    start: int, length: int, replacement: str,
) -> None:
    parses_or_locates(DEFAULT_CONFIG[:start] + replacement + DEFAULT_CONFIG[start + length:])


PATHS = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(["/", "a", "..", ".", "%2e", "%2E%2e", "%2f", "%41", "%", "%zz",
                              "//", "?", "#", "é", "\x00", "{n}", "123", "%C3%A9"]),
             max_size=20).map("".join),
)


@SETTINGS
@given(PATHS, st.sampled_from(["reject", "decode"]))
def test_the_routed_path_is_a_path_or_a_refusal(path: str, mode: str) -> None:
    try:
        routed = routed_path(path, mode)  # type: ignore[arg-type]
    except BadTarget:
        return
    assert routed == "*" or (routed.startswith("/") and not routed.startswith("//"))
    assert "/../" not in routed + "/" and "/./" not in routed + "/"
    template = path_template(routed)
    assert isinstance(template, str)


ROUTING = parse_config(DEFAULT_CONFIG, "balancer.yaml").routing
assert ROUTING is not None
CLASSIFIER = Classifier(ROUTING)
COSTS = CostModel(ROUTING.learning, cpu_threshold_ms=ROUTING.cpu_threshold_ms,
                  io_threshold=ROUTING.io_threshold)


@SETTINGS
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "X-Y"]),
       path=PATHS, query=st.text(max_size=30),
       length=st.one_of(st.none(), st.integers(0, 10**12)),
       host=st.text(max_size=20), ctype=st.text(max_size=20),
       headers=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10),
                               max_size=3))
def test_the_classifier_names_a_class_or_refuses_the_target(
    method: str, path: str, query: str, length: int | None, host: str, ctype: str,
    headers: dict[str, str],
) -> None:
    facts = Facts(method=method, path=path, query=query, content_length=length,
                  host_value=host, ctype=ctype, headers=headers)
    try:
        decision = CLASSIFIER.classify(facts, COSTS)
    except BadTarget:  # a path the backends could resolve differently: refused, every time
        with pytest.raises(BadTarget):
            CLASSIFIER.classify(facts, COSTS)
        return
    assert decision.request_class in ("io", "light_cpu", "heavy_cpu")
    again = CLASSIFIER.classify(facts, COSTS)
    assert again.request_class == decision.request_class
