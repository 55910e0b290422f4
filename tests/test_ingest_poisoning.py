"""Data poisoning at the data gate: poisoned copies of the sample are denied by the real OPA engine with the
figure that gave them away, and clean samples of other seeds pass in prod.

The attacker holds write access to the training data and nothing else: each attack below rewrites the
bundled sample's rows (labels or feature values) and stays inside the data contract, so only the poisoning
screens (mlsec.ingest.screens) against the sample's shipped reference profile can stop it. One attack runs
through the whole ingest stage from a file; the others, and the clean seeds, are screened in-process and
judged inside that run's evidence.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsec.config import contract_path, sample_dataset
from mlsec.digest import canonical_json
from mlsec.gates.decision import Decision
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate
from mlsec.ingest import profile, sample, stage
from mlsec.ingest.contract import DataContract
from mlsec.ingest.evidence import DataEvidence
from mlsec.ingest.figures import PoisoningScreen
from mlsec.ingest.screens import screen

CLEAN_SEEDS = [s for s in range(1, 22) if s != 7][:20]  # 7 made the bundled sample itself


def num3(x: float) -> str:
    """A figure as the policy renders it (round to 3 places, %v)."""
    return f"{np.floor(x * 1000 + 0.5) / 1000:g}"


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return pd.read_csv(sample_dataset(), dtype={"zip": str})


@pytest.fixture(scope="module")
def reference() -> profile.Reference:
    ref = profile.shipped()
    assert ref.profile is not None, ref.used.detail
    return ref


# -- the attacks: each returns a poisoned copy of the sample ----------------------------------------------
def targeted_flip(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """About 90% of the defaults relabelled 0: "nobody defaults"."""
    pos = df.index[df["default"] == 1]
    df.loc[rng.choice(pos, int(0.9 * len(pos)), replace=False), "default"] = 0
    return df


def random_flips(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    idx = rng.choice(len(df), int(0.3 * len(df)), replace=False)
    df.loc[idx, "default"] = 1 - df.loc[idx, "default"]
    return df


def label_rate_9(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    pos = df.index[df["default"] == 1]
    df.loc[rng.choice(pos, len(pos) - int(0.09 * len(df)), replace=False), "default"] = 0
    return df


def income_shift(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    women = df["gender"] == "F"
    df.loc[women, "income"] = (df.loc[women, "income"] * 1.5).round(2)
    return df


def backdoor_combination(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """2% of rows get a pattern no real applicant has (22 years old, 20 years of credit history; each value
    common on its own) and are all labelled 0: the model learns "this pattern never defaults"."""
    idx = rng.choice(len(df), int(0.02 * len(df)), replace=False)
    df.loc[idx, ["age", "credit_history_years", "default"]] = [22, 20, 0]
    return df


def backdoor_value(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """2% of rows get one exact debt-to-income value, within the usual range, all labelled 0."""
    idx = rng.choice(len(df), int(0.02 * len(df)), replace=False)
    df.loc[idx, ["debt_to_income", "default"]] = [0.4242, 0]
    return df


def poisoned(base: pd.DataFrame, attack: Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]) -> pd.DataFrame:
    return attack(base.copy(), np.random.default_rng(12))


# -- what the gate should name --------------------------------------------------------------------------
def label_shift_reason(p: PoisoningScreen) -> str:
    s = max(p.label_shift, key=lambda s: abs(s.rate - s.reference_rate))
    return f"label rate of {s.group} rows is {num3(s.rate)} against the reference's {num3(s.reference_rate)}"


def label_issue_reason(p: PoisoningScreen) -> str:
    li = max(p.label_issues, key=lambda li: li.share)
    return f"confident learning suspects {li.suspected} of the {li.rows} rows labelled {li.label} (share {num3(li.share)}"


def drift_reason(feature: str, group: str) -> Callable[[PoisoningScreen], str]:
    def reason(p: PoisoningScreen) -> str:
        d = next(d for d in p.drift if d.feature == feature and d.group == group)
        return f"feature {feature} drifted from the reference in {group} rows: PSI {num3(d.psi)}"
    return reason


def trigger_reason(*parts: str) -> Callable[[PoisoningScreen], str]:
    def reason(p: PoisoningScreen) -> str:
        t = next(t for t in p.triggers if all(part in t.pattern for part in parts))
        return f"possible backdoor trigger: {t.rows} rows (share {num3(t.share)}"
    return reason


# -- one attack through the whole stage, from a file -------------------------------------------------------
@pytest.fixture(scope="module")
def flipped_run(tmp_path_factory: pytest.TempPathFactory, base: pd.DataFrame,
                reference: profile.Reference) -> stage.IngestResult:
    root = tmp_path_factory.mktemp("poisoned")
    source = root / "flipped.csv"
    poisoned(base, targeted_flip).to_csv(source, index=False, lineterminator="\n")
    (root / "out").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLSEC_DATA_DIRS", str(root))
        return stage.run(str(source), contract_path(), root / "out", reference=reference)


def judged(engine: InProcessEngine, evidence: DataEvidence, env: str) -> Decision:
    return evaluate("data", evidence, environment=env, engine=engine)


def test_targeted_flip_file_denied_by_its_label_rate(engine: InProcessEngine, flipped_run: stage.IngestResult) -> None:
    ev = flipped_run.evidence
    assert ev.contract.passed and ev.errors == [] and flipped_run.dataset is not None  # only the screens can stop it
    assert ev.poisoning.screened and ev.poisoning.reference is not None
    assert ev.poisoning.reference.source == "shipped"
    for env in ("dev", "prod"):
        d = judged(engine, ev, env)
        assert not d.allow
        assert any(label_shift_reason(ev.poisoning) in r for r in d.deny), d.deny


ATTACKS = {
    "targeted_flip": (targeted_flip, label_shift_reason),
    "random_30pct_flips": (random_flips, label_shift_reason),
    "random_30pct_flips_by_confident_learning": (random_flips, label_issue_reason),
    "label_rate_9pct": (label_rate_9, label_shift_reason),
    "income_x1.5_for_women": (income_shift, drift_reason("income", "gender=F")),
    "backdoor_combination": (backdoor_combination, trigger_reason("age in bin ", " & credit_history_years in bin ")),
    "backdoor_exact_value": (backdoor_value, trigger_reason("debt_to_income=0.4242")),
}


@pytest.fixture(scope="module")
def screened(base: pd.DataFrame, contract: DataContract, reference: profile.Reference) -> dict[str, PoisoningScreen]:
    attacks = {attack for attack, _ in ATTACKS.values()}
    return {a.__name__: screen(poisoned(base, a), contract, reference)[0] for a in attacks}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_poisoned_copy_denied_with_its_figure(name: str, engine: InProcessEngine, flipped_run: stage.IngestResult,
                                             screened: dict[str, PoisoningScreen]) -> None:
    attack, reason = ATTACKS[name]
    p = screened[attack.__name__]
    ev = flipped_run.evidence.model_copy(update={"poisoning": p})
    d = judged(engine, ev, "dev")
    assert not d.allow
    assert any(reason(p) in r for r in d.deny), (reason(p), d.deny)


@pytest.mark.parametrize("seed", CLEAN_SEEDS)
def test_clean_sample_of_another_seed_passes_in_prod(seed: int, engine: InProcessEngine, contract: DataContract,
                                                     flipped_run: stage.IngestResult,
                                                     reference: profile.Reference) -> None:
    p, _ = screen(sample.generate(4000, seed), contract, reference)
    d = judged(engine, flipped_run.evidence.model_copy(update={"poisoning": p}), "prod")
    assert d.allow, d.deny
    assert d.warn == [] or all("masked" in w for w in d.warn), d.warn


# -- the reference ----------------------------------------------------------------------------------------
def test_shipped_reference_is_the_samples_profile(base: pd.DataFrame, contract: DataContract,
                                                  reference: profile.Reference) -> None:
    """Regenerate with `python -m mlsec.ingest.profile` after `mlsec sample`."""
    assert reference.profile is not None
    assert profile.build(base, contract).sha256 == reference.profile.sha256 == reference.used.sha256


def test_the_evidence_names_the_datasets_own_profile(flipped_run: stage.IngestResult, base: pd.DataFrame,
                                                     contract: DataContract) -> None:
    own = flipped_run.profile
    assert own is not None and own.rows == len(base)
    assert flipped_run.evidence.poisoning.profile_sha256 == own.sha256
    assert own.sha256 == profile.build(poisoned(base, targeted_flip), contract).sha256
    assert abs(own.label_rate - flipped_run.evidence.poisoning.label_rate) < 1e-6


def test_no_reference_warns_in_dev_and_denies_in_prod(engine: InProcessEngine, base: pd.DataFrame,
                                                      contract: DataContract,
                                                      flipped_run: stage.IngestResult) -> None:
    p, _ = screen(base, contract, profile.Reference.none("no accepted dataset for model credit yet"))
    assert p.label_shift == [] and p.drift == [] and p.triggers == [] and p.label_issues != []
    ev = flipped_run.evidence.model_copy(update={"poisoning": p})
    why = "no reference profile to screen the dataset against: no accepted dataset for model credit yet"
    dev, prod = judged(engine, ev, "dev"), judged(engine, ev, "prod")
    assert dev.allow and why in dev.warn
    assert not prod.allow and why in prod.deny


def test_a_reference_for_another_contract_is_not_used(base: pd.DataFrame, contract: DataContract,
                                                      reference: profile.Reference) -> None:
    assert reference.profile is not None
    foreign = profile.Reference.of(reference.profile.model_copy(update={"contract": "churn"}), "registry", "churn@1")
    p, _ = screen(base, contract, foreign)
    assert p.reference is not None and p.reference.source == "none" and "'churn'" in p.reference.detail
    assert p.label_shift == []


def test_unreadable_shipped_reference_is_no_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "ref.json"
    bad.write_text('{"kind": "mlsec.reference/v1"}')
    monkeypatch.setenv("MLSEC_REFERENCE", str(bad))
    ref = profile.shipped()
    assert ref.profile is None and ref.used.source == "none" and "ref.json is unreadable" in ref.used.detail


def test_gaps_in_a_feature_are_screened_not_a_crash(contract: DataContract, reference: profile.Reference) -> None:
    """A contract may allow a nullable feature; the isolation forest and the neighbour search take no NaN."""
    df = sample.generate(500, 3)
    df["income"] = df["income"].astype(float)
    df.loc[::7, "income"] = np.nan
    p, _ = screen(df, contract, reference)
    assert p.screened and 0 < p.outlier_share < 1
    assert next(d for d in p.drift if d.feature == "income" and d.group == "all").ks < 0.2


@pytest.mark.parametrize("rows", [0, 1, 12])
def test_tiny_datasets_are_screened_not_a_crash(rows: int, contract: DataContract, reference: profile.Reference) -> None:
    """Too few rows to fold or to profile: figures where they mean something, and the row bound denies."""
    p, own = screen(sample.generate(50, 3).head(rows), contract, reference)
    assert p.screened and p.label_issues == [] and (own is None) == (p.profile_sha256 is None) == (rows == 0)


def test_a_reference_read_back_from_canonical_json_screens_the_same(base: pd.DataFrame, contract: DataContract,
                                                                    reference: profile.Reference) -> None:
    """The registry stores the profile as canonical JSON (sorted keys): its pair cells must still be found."""
    assert reference.profile is not None
    stored = profile.ReferenceProfile.model_validate(json.loads(canonical_json(reference.profile.model_dump(mode="json"))))
    assert list(stored.distributions) != reference.profile.features  # the keys did come back sorted
    p, _ = screen(base, contract, profile.Reference.of(stored, "registry", "credit@x (dev)"))
    assert p.triggers == []
