"""Dataset provenance: an in-toto Statement v1 saying which bytes the dataset was made from and how.

Subject: the processed dataset (its SHA-256). Predicate: the source URI and the SHA-256 of the raw bytes
read, the data contract (name, version, SHA-256), the code commit, and each transformation in order
(parse, formula neutralisation, drop/mask/tokenize per PII column, write). It is built from the data
evidence the data gate judged, so it says nothing the gate did not see.

The sign stage signs it with the model's signing identity (DSSE; key, certificate or Sigstore, as the
model) and embeds the signed document in the model's provenance, whose dataset-provenance dependency
names its digest: it travels in provenance.dsse.json wherever the model goes, and every verification
of the model (registry, promotion, server) verifies it too (mlsec.sign.stage).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsec.digest import sha256_bytes, sha256_file, sha256_json
from mlsec.gates.attest import STATEMENT_TYPE
from mlsec.ingest.evidence import DataEvidence

PREDICATE_TYPE = "https://mlsec.dev/dataset-provenance/v1"
DATASET_NAME = "data.csv"
EMPTY = sha256_bytes(b"")


@dataclass(frozen=True)
class DatasetProvenance:
    """What a verified dataset provenance claims."""

    dataset_digest: str
    source_uri: str
    source_digest: str
    source_format: str
    contract_digest: str
    code_commit: str
    transformations: list[dict[str, Any]]
    document_digest: str  # sha256 over the canonical JSON of the signed document: what the model names


def statement(evidence: DataEvidence) -> dict[str, Any]:
    """The Statement for the dataset that evidence describes; ValueError if ingest wrote none."""
    prov = evidence.provenance
    if evidence.errors or evidence.subject.digest == EMPTY or prov.source_sha256 is None or not evidence.contract.sha256:
        raise ValueError("the data evidence describes no written dataset (ingest failed or was denied): "
                         "there is no dataset provenance to sign")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": DATASET_NAME, "digest": {"sha256": evidence.subject.digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "source": {"uri": prov.source_uri, "digest": {"sha256": prov.source_sha256}, "format": prov.format},
            "contract": {"name": evidence.contract.name, "version": evidence.contract.version,
                         "digest": {"sha256": evidence.contract.sha256}},
            "code": {"commit": prov.code_commit, "ingestedBy": prov.ingested_by},
            "transformations": [t.model_dump(mode="json") for t in evidence.transformations],
            "result": {"rows": evidence.rows, "columns": evidence.columns, "piiDetector": evidence.pii.detector},
        },
    }


def read(stmt: dict[str, Any], document_digest: str) -> DatasetProvenance:
    """What a statement (already verified by the caller) claims; ValueError if it is not one of ours."""
    try:
        if stmt["_type"] != STATEMENT_TYPE or stmt["predicateType"] != PREDICATE_TYPE:
            raise ValueError(f"not an in-toto v1 dataset provenance ({PREDICATE_TYPE})")
        (subject,) = stmt["subject"]
        pred = stmt["predicate"]
        return DatasetProvenance(
            dataset_digest=subject["digest"]["sha256"], source_uri=pred["source"]["uri"],
            source_digest=pred["source"]["digest"]["sha256"], source_format=pred["source"]["format"],
            contract_digest=pred["contract"]["digest"]["sha256"], code_commit=pred["code"]["commit"],
            transformations=list(pred["transformations"]), document_digest=document_digest,
        )
    except (KeyError, TypeError) as e:
        raise ValueError(f"dataset provenance is malformed: missing {e}") from e
    except ValueError as e:
        raise ValueError(f"dataset provenance: {e}") from e


def document_digest(document: dict[str, Any]) -> str:
    return sha256_json(document)


def verify_document(document: dict[str, Any], trust: Any, signature: Path) -> DatasetProvenance:
    """Checks the signed document with trust (a mlsec.sign.methods.Trust; signature is the model's
    model.sig, which a certificate trust reads its leaf key from), then reads it."""
    stmt = trust.open_statement(json.dumps(document).encode(), signature)
    return read(stmt, document_digest(document))


def check_bytes(prov: DatasetProvenance, dataset: Path | None = None, raw: bytes | None = None) -> None:
    """ValueError unless the dataset file (and the raw source bytes, when given) are the ones it names."""
    if dataset is not None and (actual := sha256_file(dataset)) != prov.dataset_digest:
        raise ValueError(f"dataset {dataset.name} is {actual}, not the {prov.dataset_digest} its provenance names")
    if raw is not None and (actual := sha256_bytes(raw)) != prov.source_digest:
        raise ValueError(f"source bytes are {actual}, not the {prov.source_digest} the dataset provenance names")
