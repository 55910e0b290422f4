"""Signed policy bundles: OPA (started with --verification-key, as the cluster starts it) activates only a
bundle whose every file matches the ES256 signature. `verify` makes OPA's checks; these tests tamper with
a real signed bundle in each way OPA refuses. (No OPA binary here: OPA's own verifier never ran on them.)"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from mlsec.cli import main
from mlsec.config import policy_dir
from mlsec.gates.bundle import SIGNATURES, BundleError, _parse, _read, _structured, build, verify
from mlsec.gates.engine import InProcessEngine
from mlsec.sign import keys


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keys.KeyPair]:
    tmp = tmp_path_factory.mktemp("bundle")
    pair = keys.create(tmp / "policy-key")
    out = tmp / "bundle.tar.gz"
    build(policy_dir(), out, "r1", signing_key=pair.private_key)
    return out, pair


def _rewrite(bundle: Path, out: Path, change: Callable[[dict[str, bytes]], object]) -> Path:
    files = _read(bundle)
    change(files)
    with tarfile.open(out, "w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return out


def test_signed_bundle_verifies_and_names_its_policies(signed: tuple[Path, keys.KeyPair],
                                                       engine: InProcessEngine) -> None:
    bundle, pair = signed
    manifest = verify(bundle, pair.public_key)
    assert manifest["revision"] == "r1" and manifest["metadata"]["mlsec_policy_sha256"] == engine.policy_sha256
    token = json.loads(_read(bundle)[SIGNATURES])["signatures"][0]
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    listed = {f["name"] for f in jwt.decode(token, options={"verify_signature": False})["files"]}
    assert listed == set(_read(bundle)) - {SIGNATURES}  # names as OPA compares them: no leading slash


def test_opas_own_builtins_accept_the_signature_and_hashes(signed: tuple[Path, keys.KeyPair],
                                                         engine: InProcessEngine) -> None:
    """The real engine's JWT and crypto builtins (the JWS library its bundle verifier uses) check what
    `opa run --verification-key` checks: the ES256 signature under the policy key, and each file's
    SHA-256 (.rego as text, .manifest and data.json as OPA re-encodes parsed JSON; json.marshal matches
    that for these files, which have no <, > or & for Go to escape)."""
    bundle, pair = signed
    files = _read(bundle)
    structured = {n: json.loads(b) for n, b in files.items() if n in {".manifest", "data/data.json"}}
    assert not any(c in json.dumps(structured) for c in "<>&")
    (result,) = engine.opa.eval_query(
        "valid := io.jwt.verify_es256(input.token, input.key); "
        "[_, payload, _] := io.jwt.decode(input.token); "
        "listed := {f.name: f.hash | some f in payload.files}; "
        "texts := {n | some n, text in input.texts; listed[n] == crypto.sha256(text)}; "
        "docs := {n | some n, doc in input.docs; listed[n] == crypto.sha256(json.marshal(doc))}",
        {"token": json.loads(files[SIGNATURES])["signatures"][0], "key": pair.public_key.read_text(),
         "texts": {n: b.decode() for n, b in files.items() if n.endswith(".rego")}, "docs": structured})
    assert result["valid"] is True
    assert set(result["texts"]) == {n for n in files if n.endswith(".rego")}
    assert set(result["docs"]) == {".manifest", "data/data.json"}
    assert set(result["listed"]) == set(files) - {SIGNATURES}


def test_changed_policy_byte_is_refused(signed: tuple[Path, keys.KeyPair], tmp_path: Path) -> None:
    bundle, pair = signed

    def weaken(files: dict[str, bytes]) -> None:
        files["deployment.rego"] = files["deployment.rego"].replace(b"runAsNonRoot must be true", b"runAsNonRoot must be truE")

    with pytest.raises(BundleError, match="deployment.rego: digest does not match"):
        verify(_rewrite(bundle, tmp_path / "b.tar.gz", weaken), pair.public_key)


def test_changed_threshold_is_refused_but_reformatted_data_is_not(signed: tuple[Path, keys.KeyPair],
                                                                  tmp_path: Path) -> None:
    bundle, pair = signed
    data = json.loads(_read(bundle)["data/data.json"])

    def reformat(files: dict[str, bytes]) -> None:  # OPA hashes data.json as parsed JSON, not as bytes
        files["data/data.json"] = json.dumps(data, indent=2).encode()

    verify(_rewrite(bundle, tmp_path / "same.tar.gz", reformat), pair.public_key)

    def respell(files: dict[str, bytes]) -> None:  # ...but by its number literals: 0.80 is not 0.8 to OPA
        assert b'"min_accuracy":0.8,' in files["data/data.json"]
        files["data/data.json"] = files["data/data.json"].replace(b'"min_accuracy":0.8,', b'"min_accuracy":0.80,', 1)

    with pytest.raises(BundleError, match="data/data.json: digest does not match"):
        verify(_rewrite(bundle, tmp_path / "respelt.tar.gz", respell), pair.public_key)

    def lower(files: dict[str, bytes]) -> None:
        data["prod"]["training"]["min_accuracy"] = 0.1
        files["data/data.json"] = json.dumps(data).encode()

    with pytest.raises(BundleError, match="data/data.json: digest does not match"):
        verify(_rewrite(bundle, tmp_path / "lower.tar.gz", lower), pair.public_key)


def test_added_and_removed_files_are_refused(signed: tuple[Path, keys.KeyPair], tmp_path: Path) -> None:
    bundle, pair = signed
    with pytest.raises(BundleError, match="allow.rego is not covered by the bundle signature"):
        verify(_rewrite(bundle, tmp_path / "a.tar.gz", lambda f: f.update({"allow.rego": b"package x\n"})),
               pair.public_key)
    with pytest.raises(BundleError, match="signed but missing from the bundle: lib/decisions.rego"):
        verify(_rewrite(bundle, tmp_path / "r.tar.gz", lambda f: f.pop("lib/decisions.rego")), pair.public_key)


def test_other_key_and_unsigned_bundles_are_refused(signed: tuple[Path, keys.KeyPair], tmp_path: Path) -> None:
    bundle, _ = signed
    other = keys.create(tmp_path / "other")
    with pytest.raises(BundleError, match="does not verify"):
        verify(bundle, other.public_key)
    with pytest.raises(BundleError, match="is not signed"):
        verify(_rewrite(bundle, tmp_path / "u.tar.gz", lambda f: f.pop(SIGNATURES)), other.public_key)
    re_signed = json.dumps({"signatures": [jwt.encode({"files": []}, keys.load_private(other.private_key),
                                                      algorithm="ES256")] * 2}).encode()
    with pytest.raises(BundleError, match="exactly one JWT"):
        verify(_rewrite(bundle, tmp_path / "two.tar.gz", lambda f: f.update({SIGNATURES: re_signed})),
               other.public_key)


def test_structured_files_are_encoded_as_opas_hasher_encodes_them() -> None:
    # Go's encoder (bundle/hash.go encodePrimitive, HTML escaping off): compact, sorted keys, U+2028/U+2029
    # and control characters escaped, number literals kept as written.
    value = {"b": [1, 0.1, 1e-05, True, None], "a": "x\u2028y\u2029<&>\n\x01\u00e9"}
    assert _structured(value) == b'{"a":"x\\u2028y\\u2029<&>\\n\\u0001\xc3\xa9","b":[1,0.1,1e-05,true,null]}'
    assert _structured(_parse(b'{"n": [1.50, 10, -0.0e1]}')) == b'{"n":[1.50,10,-0.0e1]}'


def test_cli_signs_and_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = keys.create(tmp_path / "policy-key")
    out = tmp_path / "b.tar.gz"
    assert main(["policy", "bundle", "-o", str(out), "--signing-key", str(pair.private_key)]) == 0
    assert "unsigned" not in capsys.readouterr().err
    assert main(["policy", "verify-bundle", str(out), "--public-key", str(pair.public_key)]) == 0
    assert "verified" in capsys.readouterr().out
    assert main(["policy", "bundle", "-o", str(out)]) == 0
    assert "the bundle is unsigned" in capsys.readouterr().err
    assert main(["policy", "verify-bundle", str(out), "--public-key", str(pair.public_key)]) == 1
    assert "REFUSED" in capsys.readouterr().err
    assert main(["policy", "bundle", "-o", str(out), "--signing-key", str(pair.public_key)]) == 2
    assert "cannot read private key" in capsys.readouterr().err


# -- bundle bombs: refused on what the headers announce, within bounded memory ----------------------
def _bomb(out: Path, header: tarfile.TarInfo, zeros: int, first: dict[str, bytes] | None = None) -> Path:
    """A .tar.gz whose member `header` is followed by `zeros` zero bytes, written without ever holding
    (or compressing) them whole: every 1 MiB of zeros compresses to the same bytes after a full flush."""
    import struct
    import zlib

    chunk, crc, size = b"\0" * (1 << 20), 0, 0
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    with out.open("wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")

        def put(data: bytes) -> bytes:
            nonlocal crc, size
            crc, size = zlib.crc32(data, crc), size + len(data)
            return deflate.compress(data) + deflate.flush(zlib.Z_FULL_FLUSH)

        for name, payload in (first or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            f.write(put(info.tobuf(tarfile.GNU_FORMAT) + payload + b"\0" * (-len(payload) % 512)))
        f.write(put(header.tobuf(tarfile.GNU_FORMAT)))
        block = put(chunk)
        f.write(block)
        for _ in range(zeros // len(chunk) - 1):
            f.write(block)
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
        f.write(put(b"\0" * 1024) + deflate.flush())
        f.write(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return out


def _rss_growth(bundle: Path, public_key: Path) -> tuple[int, str]:
    """Peak RSS growth (bytes) of verify() in a fresh interpreter, and what it raised."""
    import subprocess
    import sys

    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from mlsec.gates.bundle import BundleError, verify\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    verify(Path(sys.argv[1]), Path(sys.argv[2])); error = 'none'\n"
        "except BundleError as e:\n"
        "    error = str(e)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
        "print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(bundle), str(public_key)], capture_output=True,
                         text=True, check=True, timeout=120).stdout.splitlines()
    return int(out[0]), out[1]


GIB2 = 2 << 30


def test_bundle_bomb_is_refused_within_bounded_memory(signed: tuple[Path, keys.KeyPair], tmp_path: Path) -> None:
    _, pair = signed
    info = tarfile.TarInfo("data/data.json")
    info.size = GIB2
    bomb = _bomb(tmp_path / "bomb.tar.gz", info, GIB2)
    assert bomb.stat().st_size < 4 << 20  # a few MiB that expand to 2 GiB
    growth, error = _rss_growth(bomb, pair.public_key)
    assert "data/data.json: 2147483648 bytes exceeds the" in error
    assert growth < 50 << 20, f"verify grew RSS by {growth >> 20} MiB"


def test_unsigned_member_after_the_signature_is_refused_unread(signed: tuple[Path, keys.KeyPair],
                                                               tmp_path: Path) -> None:
    """Signature first, then a 6 MiB member (under the size limit) it does not list: refused on its name."""
    bundle, pair = signed
    files = _read(bundle)
    assert next(iter(files)) == SIGNATURES  # build writes it first, as OPA does
    info = tarfile.TarInfo("zzz.rego")
    info.size = 6 << 20
    sneaky = _bomb(tmp_path / "sneaky.tar.gz", info, 6 << 20, first=files)
    with pytest.raises(BundleError, match="zzz.rego is not covered by the bundle signature"):
        verify(sneaky, pair.public_key)


def test_oversized_extended_header_and_too_many_members_are_refused(signed: tuple[Path, keys.KeyPair],
                                                                    tmp_path: Path) -> None:
    from mlsec.gates.bundle import Limits

    _, pair = signed
    longname = tarfile.TarInfo("././@LongLink")
    longname.type, longname.size = tarfile.GNUTYPE_LONGNAME, GIB2
    growth, error = _rss_growth(_bomb(tmp_path / "long.tar.gz", longname, GIB2), pair.public_key)
    assert "extended header of 2147483648 bytes" in error and growth < 50 << 20
    many = _rewrite(signed[0], tmp_path / "many.tar.gz", lambda f: f.update({f"x{i}.rego": b"" for i in range(20)}))
    with pytest.raises(BundleError, match="more than 10 members"):
        verify(many, pair.public_key, Limits(members=10))
    with pytest.raises(BundleError, match="bundle content exceeds the 1000-byte limit"):
        verify(signed[0], pair.public_key, Limits(total_bytes=1000))
