"""Human units: each case is a value and the string a person would write for it."""

import pytest

from sweep import units


@pytest.mark.parametrize(("n", "text"), [
    (70e9, "70B"), (8_030_261_248, "8.03B"), (70_553_706_496, "70.6B"), (125e6, "125M"),
    (405_853_388_800, "406B"), (1.2e12, "1.2T"), (175e9, "175B"), (950, "950"),
    (999.6e6, "1B"), (999.4e6, "999M"), (1.5e3, "1.5k"), (0, "0"),
])
def test_params(n, text):
    assert units.params(n) == text


@pytest.mark.parametrize(("n", "text"), [
    (8192, "8k"), (131072, "128k"), (4_194_304, "4M"), (1536, "1.5k"), (2048, "2k"),
    (98_304, "96k"), (1_000_000, "1M"), (15e12, "15T"), (2e12, "2T"), (8191, "8.19k"),
    (1000, "1k"), (512, "512"), (1, "1"),
])
def test_tokens(n, text):
    assert units.tokens(n) == text


@pytest.mark.parametrize(("n", "text"), [
    (80 * 2**30, "80 GiB"), (1.2 * 2**40, "1.2 TiB"), (512, "512 B"), (0, "0 B"),
    (1536, "1.5 KiB"), (3 * 2**20, "3 MiB"), (79.37 * 2**30, "79.4 GiB"),
    (1023.9 * 2**30, "1 TiB"), (-2 * 2**30, "-2 GiB"), (2.5 * 2**50, "2.5 PiB"),
])
def test_bytes(n, text):
    assert units.bytes_(n) == text


def test_gib_column():
    assert units.gib(152.4) == "152 GiB"
    assert units.gib(0.5) == "512 MiB"


@pytest.mark.parametrize(("n", "text"), [
    (1024, "1,024"), (65536, "65,536"), (8, "8"), (0.125, "0.125"), (2.5, "2.5"),
    (0, "0"), (1 / 3, "0.333"),
])
def test_count(n, text):
    assert units.count(n) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0.35, "350 ms"), (42, "42 s"), (90, "1.5 min"), (5400, "1.5 h"), (3.4 * 3600, "3.4 h"),
    (86400, "24 h"), (2 * 86400, "2 days"), (12 * 86400, "12 days"),
    (1.5 * 365.25 * 86400, "1.5 years"), (365.25 * 86400, "1 year"), (0, "0 s"),
])
def test_duration(seconds, text):
    assert units.duration(seconds) == text


@pytest.mark.parametrize(("amount", "text"), [
    (3.5, "$3.50"), (42, "$42"), (1234, "$1,234"), (9999, "$9,999"), (12_345, "$12.3k"),
    (350_000, "$350k"), (1.2e6, "$1.2M"), (2.5e9, "$2.5B"), (-1200, "-$1,200"),
])
def test_money(amount, text):
    assert units.money(amount) == text


def test_money_in_another_currency():
    assert units.money(1.2e6, currency="€") == "€1.2M"


@pytest.mark.parametrize(("value", "unit", "text"), [
    (989e12, "FLOP/s", "989 TFLOP/s"), (3.35e12, "B/s", "3.35 TB/s"), (400, "W", "400 W"),
    (1.979e15, "FLOP/s", "1.98 PFLOP/s"),
])
def test_si(value, unit, text):
    assert units.si(value, unit) == text


@pytest.mark.parametrize(("fraction", "text"), [
    (0.853, "85.3%"), (1, "100%"), (0.0042, "0.42%"), (0.9, "90%"),
])
def test_percent(fraction, text):
    assert units.percent(fraction) == text


def test_digits_are_a_parameter():
    assert units.params(70_553_706_496, digits=2) == "71B"
    assert units.bytes_(79.37 * 2**30, digits=2) == "79 GiB"


def test_days_and_unit_prices():
    assert units.days(0.5) == "12 h"
    assert units.days(30) == "30 days"
    assert units.unit_price(0.0855) == "$0.0855"
    assert units.unit_price(0.11) == "$0.11"
