"""[INSTRUMENT] risk keys, [FUNDING] sections and IndexStaleSeconds: parsed exactly into the
engine's units (minor units, ppm), bad input refused naming the section and key."""

from __future__ import annotations

import pytest

from engine.instruments import Instrument
from fixserver.config import ConfigError, parse_config
from fixserver.funding_config import Funding, funding_deposits

HEAD = """[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptPort=0
JournalPath=journal
{default}
[FIRM]
Firm=ACME
Accounts=A1,A2
[SESSION]
TargetCompID=C1
Firm=ACME
"""

BTC = """[INSTRUMENT]
Symbol=BTC-PERP
TickSize=0.1
LotSize=0.001
ReferencePrice=60000
"""

RISK = """SettlementAsset=USDT
SettlementDecimals=6
MaxLeverage=100
DefaultLeverage=20
RiskTiers=50000:0.5%:100, 250000:1%:50, 1_000_000:2.5%:20, 5000000.5:0.0125%:2
MarkIntervalMs=500
MarkSmoothing=30
MarkBasisCapPpm=3000
"""


def _parse(*sections: str, default: str = ""):
    return parse_config(HEAD.format(default=default) + "".join(sections))


def _instrument(extra: str) -> Instrument:
    return _parse(BTC + extra).instruments[0]


def test_risk_keys_become_the_engines_units_exactly():
    """Caps in minor units, rates in ppm, every key carried; the instrument is margined."""
    inst = _instrument(RISK)
    assert inst.margined
    assert (inst.settlement_asset, inst.settlement_decimals) == ("USDT", 6)
    assert (inst.max_leverage, inst.default_leverage) == (100, 20)
    assert inst.risk_tiers == ((50_000_000_000, 5_000, 100), (250_000_000_000, 10_000, 50),
                               (1_000_000_000_000, 25_000, 20),
                               (5_000_000_500_000, 125, 2))
    assert (inst.mark_interval_ms, inst.mark_smoothing, inst.mark_basis_cap_ppm) == \
        (500, 30, 3000)


def test_liquidation_and_funding_keys_exactly():
    """Fees in ppm, rates as exact 1e-8 units, the impact notional in minor units."""
    inst = _instrument("MaxLeverage=50\nLiquidationFeePpm=7500\nFundingIntervalSeconds=3600\n"
                       "FundingInterestRate=0.003%\nFundingClamp=0.05%\nFundingCap=2%\n"
                       "ImpactNotional=2500.5\nMarginCallLevels=70%, 85%\n")
    assert (inst.liquidation_fee_ppm, inst.funding_interval_s) == (7_500, 3_600)
    assert (inst.funding_interest_e8, inst.funding_clamp_e8, inst.funding_cap_e8) == \
        (3_000, 50_000, 2_000_000)
    assert inst.impact_notional == 2_500_500_000
    assert inst.margin_call_levels == (700_000, 850_000)
    default = _instrument("MaxLeverage=50\n")
    assert (default.funding_interval_s, default.margin_call_levels) == (28_800,
                                                                        (800_000, 900_000))


def test_defaults_and_an_unmargined_instrument():
    """MaxLeverage alone takes the engine's defaults; without it nothing is margined."""
    inst = _instrument("MaxLeverage=50\n")
    assert inst.margined and inst.risk_tiers == () and inst.settlement_asset == "USDT"
    assert inst.mark_interval_ms == 1000 and inst.default_leverage == 0
    assert not _instrument("").margined


@pytest.mark.parametrize("extra, key, words", [
    ("MaxLeverage=0\n", "MaxLeverage", "1 to 1000"),
    ("MaxLeverage=1001\n", "MaxLeverage", "1 to 1000"),
    ("MaxLeverage=10\nDefaultLeverage=20\n", "DefaultLeverage", "above MaxLeverage 10"),
    ("RiskTiers=50000:0.5%:10\n", "RiskTiers", "set MaxLeverage too"),
    ("MarkSmoothing=5\n", "MarkSmoothing", "set MaxLeverage too"),
    ("MaxLeverage=10\nRiskTiers=50000:0.5:10\n", "RiskTiers", "percentage"),
    ("MaxLeverage=10\nRiskTiers=50000:0.5%\n", "RiskTiers", "expected cap:rate%:leverage"),
    ("MaxLeverage=10\nRiskTiers=abc:0.5%:10\n", "RiskTiers", "positive amount"),
    ("MaxLeverage=10\nRiskTiers=50000:0.00001%:10\n", "RiskTiers", "finer than 0.0001%"),
    ("MaxLeverage=10\nRiskTiers=50000:100%:1\n", "RiskTiers", "below 100%"),
    ("MaxLeverage=10\nRiskTiers=50000:0.5%:20\n", "RiskTiers", "above MaxLeverage 10"),
    ("MaxLeverage=10\nRiskTiers=50000:0.5%:10, 40000:1%:5\n", "RiskTiers", "caps must rise"),
    ("MaxLeverage=100\nRiskTiers=50000:1%:100\n", "RiskTiers", "reaches 100%"),
    ("MaxLeverage=10\nSettlementDecimals=2\nRiskTiers=50000.001:1%:5\n", "RiskTiers",
     "more than 2 decimals"),
    ("MaxLeverage=10\nSettlementDecimals=2\n", "MaxLeverage", "not a whole number of the"),
    ("MaxLeverage=10\nSettlementAsset=usdt\n", "SettlementAsset", "e.g. USDT"),
    ("MaxLeverage=10\nSettlementDecimals=19\n", "SettlementDecimals", "0 to 18"),
    ("MaxLeverage=10\nMarkBasisCapPpm=1000000\n", "MarkBasisCapPpm", "0 to 999999"),
    ("MaxLeverage=10\nMarkIntervalMs=0\n", "MarkIntervalMs", "1 to"),
    ("FundingCap=1%\n", "FundingCap", "set MaxLeverage too"),
    ("MaxLeverage=10\nFundingInterestRate=0.01\n", "FundingInterestRate", "percentage"),
    ("MaxLeverage=10\nFundingCap=0.0000001%\n", "FundingCap", "finer than"),
    ("MaxLeverage=10\nMarginCallLevels=90%, 80%\n", "MarginCallLevels", "must rise"),
    ("MaxLeverage=10\nImpactNotional=0.0000001\n", "ImpactNotional", "minor units"),
    ("MaxLeverage=10\nFundingIntervalSeconds=0\n", "FundingIntervalSeconds", "1 to"),
])
def test_bad_risk_keys_are_refused_naming_section_and_key(extra, key, words):
    """Each mistake stops parsing with the key, the [INSTRUMENT] section and the reason."""
    with pytest.raises(ConfigError) as caught:
        _instrument(extra)
    message = str(caught.value)
    assert f"{key}=" in message and "[INSTRUMENT] #1" in message, message
    assert words in message, message


def test_one_asset_has_one_number_of_decimals():
    """Two margined instruments settling in USDT must agree on its decimals."""
    eth = ("[INSTRUMENT]\nSymbol=ETH-PERP\nTickSize=0.01\nLotSize=0.01\nMaxLeverage=50\n"
           "SettlementDecimals=4\n")
    with pytest.raises(ConfigError) as caught:
        _parse(BTC + "MaxLeverage=100\n", eth)
    assert "SettlementDecimals=" in str(caught.value) and "[INSTRUMENT] #2" in str(caught.value)
    assert "USDT has 6 decimals" in str(caught.value)


FUNDING = "[FUNDING]\nAccounts=A1, A2\nAsset=USDT\nAmount={amount}\n"


def test_funding_sections_give_minor_units_per_account():
    """Accounts, asset and an exact amount: one Funding row per account."""
    parsed = _parse(BTC + "MaxLeverage=100\n", FUNDING.format(amount="1_000_000.25"))
    assert parsed.funding == (Funding("A1", "USDT", 1_000_000_250_000),
                              Funding("A2", "USDT", 1_000_000_250_000))


@pytest.mark.parametrize("sections, key, words", [
    ((BTC + "MaxLeverage=100\n", FUNDING.format(amount="0")), "Amount", "positive decimal"),
    ((BTC + "MaxLeverage=100\n", FUNDING.format(amount="1.0000001")), "Amount",
     "USDT has 6 decimals"),
    ((BTC, FUNDING.format(amount="10")), "Asset", "no margined [INSTRUMENT] settles in USDT"),
    ((BTC + "MaxLeverage=100\n", "[FUNDING]\nAccounts=A1,NOPE\nAsset=USDT\nAmount=5\n"),
     "Accounts", "account NOPE is not configured"),
    ((BTC + "MaxLeverage=100\n", FUNDING.format(amount="5"), FUNDING.format(amount="6")),
     "Accounts", "account A1 is funded in USDT already"),
])
def test_bad_funding_is_refused_naming_section_and_key(sections, key, words):
    """Unknown accounts or assets, inexact or non-positive amounts, funding twice."""
    with pytest.raises(ConfigError) as caught:
        _parse(*sections)
    message = str(caught.value)
    assert f"{key}=" in message and "[FUNDING] #" in message and words in message, message


def test_funding_needs_every_key():
    """A [FUNDING] section without Amount is refused."""
    with pytest.raises(ConfigError, match=r"Amount is missing in \[FUNDING\] #1"):
        _parse(BTC + "MaxLeverage=100\n", "[FUNDING]\nAccounts=A1\nAsset=USDT\n")


def test_funding_deposits_only_for_accounts_without_a_record():
    """Start-up deposits skip an account the engine already has collateral records for."""
    funding = [Funding("A1", "USDT", 5), Funding("A2", "USDT", 7)]
    deposits = funding_deposits(funding, lambda account, asset: account == "A1")
    assert [(d.account, d.asset, d.amount, d.ref) for d in deposits] == \
        [("A2", "USDT", 7, "config-funding")]


def test_index_stale_seconds():
    """IndexStaleSeconds is a positive number of seconds, default 30."""
    assert _parse(BTC).index_stale_seconds == 30.0
    assert _parse(BTC, default="IndexStaleSeconds=2.5").index_stale_seconds == 2.5
    with pytest.raises(ConfigError, match="IndexStaleSeconds='0'"):
        _parse(BTC, default="IndexStaleSeconds=0")
