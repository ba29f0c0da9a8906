"""balancer/config/units.py: durations and sizes as numbers, and errors that say what would
have been accepted (an operator reads them as `file:line:col: key: <message>`)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balancer.config.units import parse_duration, parse_size

DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
SIZE_UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
              "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


@pytest.mark.parametrize(("raw", "seconds"), [
    ("250ms", 0.25), ("2s", 2.0), ("1.5m", 90.0), ("1h", 3600.0), ("0", 0.0),
    ("10", 10.0),            # a bare number is seconds, as text too
    (" 2 s ", 2.0),          # spaces around and between number and unit
    (3, 3.0), (0.5, 0.5),    # a YAML number is seconds
])
def test_a_duration_reads_as_seconds(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@given(number=st.integers(0, 10**6), unit=st.sampled_from(sorted(DURATION_UNITS)))
def test_every_duration_unit_scales_the_number(number: int, unit: str) -> None:
    assert parse_duration(f"{number}{unit}") == pytest.approx(number * DURATION_UNITS[unit])


@pytest.mark.parametrize(("raw", "message"), [
    ("soon", "'soon' is not a duration (expected e.g. 250ms, 2s, 1m)"),
    ("2 parsecs", "'2 parsecs' is not a duration (expected e.g. 250ms, 2s, 1m)"),
    ("-1s", "'-1s' is not a duration (expected e.g. 250ms, 2s, 1m)"),
    ("1S", "'1S' is not a duration (expected e.g. 250ms, 2s, 1m)"),  # units are lower case
    (True, "True is not a duration (expected e.g. 250ms, 2s, 1m)"),  # not 1 second
    (-1, "-1 is negative (a duration must be >= 0)"),
    (-0.5, "-0.5 is negative (a duration must be >= 0)"),
])
def test_a_bad_duration_says_what_is_expected(raw: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(raw)
    assert str(info.value) == message


@pytest.mark.parametrize(("raw", "size"), [
    ("10MiB", 10 * 1024**2), ("512KB", 512_000), ("100B", 100), ("1.5KiB", 1536),
    ("10mib", 10 * 1024**2), ("16kib", 16384),   # units in any case
    ("2048", 2048), (" 4 KiB ", 4096), (512, 512), (0, 0),
])
def test_a_size_reads_as_bytes(raw: object, size: int) -> None:
    assert parse_size(raw) == size


@given(number=st.integers(0, 10**6), unit=st.sampled_from(sorted(SIZE_UNITS)))
def test_every_size_unit_scales_the_number(number: int, unit: str) -> None:
    assert parse_size(f"{number}{unit}") == number * SIZE_UNITS[unit]


@pytest.mark.parametrize(("raw", "message"), [
    ("lots", "'lots' is not a size (expected e.g. 16KiB, 10MiB)"),
    ("10 MiBs", "'10 MiBs' is not a size (expected e.g. 16KiB, 10MiB)"),
    ("-1KiB", "'-1KiB' is not a size (expected e.g. 16KiB, 10MiB)"),
    (False, "False is not a size (expected e.g. 16KiB, 10MiB)"),
    (-5, "-5 is negative (a size must be >= 0)"),
])
def test_a_bad_size_says_what_is_expected(raw: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(raw)
    assert str(info.value) == message


@given(st.one_of(st.text(max_size=20), st.integers(), st.floats(allow_nan=False),
                 st.booleans(), st.none()))
def test_any_scalar_is_a_number_or_a_value_error(raw: object) -> None:
    for parse in (parse_duration, parse_size):
        try:
            value = parse(raw)
        except ValueError as exc:
            assert str(exc)
        else:
            assert value >= 0


@pytest.mark.parametrize("raw", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_not_durations(raw: float) -> None:
    """YAML's `.nan` and `.inf` read as floats: a timeout of nan seconds was accepted."""
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(raw)
