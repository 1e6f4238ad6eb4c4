"""Models are stored as plain arrays and JSON, never pickles: a stored or supplied model file can
hold data only, and one that does not have the expected shapes is refused with a clear error."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from parley_router.domain.classifier import IntentClassifier

CLI = Path(sys.executable).parent / "parley-router"


class _Planted:
    """Unpickling this would create a file: the proof that a loader executed the payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.path), "executed"))  # type: ignore[return-value]


def _arrays(model: IntentClassifier) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(model.dumps()), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _archive(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def test_a_model_round_trips_with_the_same_answers(model: IntentClassifier) -> None:
    again = IntentClassifier.loads(model.dumps())
    texts = ["refund please", "kaç tane bilet alabilirim", "ami 2ta ticket kinte chai", "😀", ""]
    langs = ["en", "tr", "bn", None, None]
    assert again.intents == model.intents and again.languages == model.languages
    assert again.config == model.config
    assert np.array_equal(again.lexical_probabilities(texts), model.lexical_probabilities(texts))
    assert np.allclose(again.probabilities(texts, langs, gate=1.0), model.probabilities(texts, langs, gate=1.0))


def test_a_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    blob = pickle.dumps({"format": 3, "classifier": _Planted(marker)})
    with pytest.raises(ValueError, match="not a model archive"):
        IntentClassifier.loads(blob)
    # An .npz whose array is a pickled object array is refused too (allow_pickle=False).
    buf = io.BytesIO()
    np.savez(buf, header=np.array([_Planted(marker)], dtype=object))
    with pytest.raises(ValueError):
        IntentClassifier.loads(buf.getvalue())
    assert not marker.exists()


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: a.pop("coef"), "'coef' is missing"),
    (lambda a: a.update(coef=a["coef"][:, :-1]), "'coef' has shape"),
    (lambda a: a.update(enc_coef=a["enc_coef"][:, :100]), "'enc_coef' has shape"),
    (lambda a: a.update(intercept=np.full_like(a["intercept"], np.nan)), "non-finite"),
    (lambda a: a.update(word_idf=a["word_idf"][:-1]), "does not match its vocabulary"),
    (lambda a: a.update(coef=a["coef"].astype(np.int64)), "not floating point"),
    (lambda a: a.update(header=np.frombuffer(b"{not json", dtype=np.uint8)), "not JSON"),
])
def test_malformed_models_are_refused_naming_the_problem(model: IntentClassifier, change, message: str) -> None:
    arrays = _arrays(model)
    change(arrays)
    with pytest.raises(ValueError, match=message):
        IntentClassifier.loads(_archive(arrays))


def test_a_wrong_config_or_version_is_refused(model: IntentClassifier) -> None:
    arrays = _arrays(model)
    header = json.loads(arrays["header"].tobytes())
    for bad in ({**header, "format": 3}, {**header, "config": {**header["config"], "c": "x"}},
                {**header, "config": {**header["config"], "stemmer": "klingon"}},
                {**header, "classes": ["a", "a"]}):
        arrays["header"] = np.frombuffer(json.dumps(bad).encode(), dtype=np.uint8)
        with pytest.raises(ValueError):
            IntentClassifier.loads(_archive(arrays))
    with pytest.raises(ValueError, match="larger than"):
        IntentClassifier.loads(model.dumps(), max_bytes=1000)


def test_classify_refuses_a_pickled_model_file(tmp_path: Path) -> None:
    marker, bad = tmp_path / "marker", tmp_path / "model.pkl"
    bad.write_bytes(pickle.dumps(_Planted(marker)))
    proc = subprocess.run([str(CLI), "classify", "--model", str(bad)], input='{"text": "hi"}\n',
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "cannot read the model" in proc.stderr
    assert not marker.exists()


def test_classify_reads_a_model_written_by_train(tmp_path: Path) -> None:
    out = tmp_path / "model.npz"
    trained = subprocess.run([str(CLI), "train", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    proc = subprocess.run([str(CLI), "classify", "--model", str(out)], input='{"text": "STOP"}\n',
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["intent"] == "opt_out"
