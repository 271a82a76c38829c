"""``text``: any plain-text character corpus, a UTF-8 .txt file or a folder of them.

The vocabulary is every character of the corpus, in code-point order (line ends read as "\\n").
Samples are cut from each file separately (fedsec.data.text) and split 80/20 into train/test
within each file from ``seed``. A folder of several files is naturally partitioned by file
(``groups``: one per file with samples, in file-name order); a single file has no groups.
"""
from __future__ import annotations

from pathlib import Path

from .dataset import DataError, Dataset, LoadRequest
from .text import corpus_vocabulary, encode, text_dataset

EXPECTS = "a UTF-8 .txt file, or a folder of .txt files"


def _corpus_files(name: str, data_dir: Path) -> list[Path]:
    if data_dir.is_file():
        return [data_dir]
    if not data_dir.is_dir():
        raise DataError(f"{name}: data_dir {data_dir} does not exist; expected {EXPECTS}")
    files = sorted(path for path in data_dir.glob("*.txt") if path.is_file())
    if not files:
        raise DataError(f"{name}: data_dir {data_dir} holds no .txt file; expected {EXPECTS}")
    return files


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc


def load_text_corpus(request: LoadRequest) -> Dataset:
    data_dir = request.data_dir
    files = _corpus_files(request.name, data_dir)
    texts = [_read(path) for path in files]
    vocabulary = corpus_vocabulary(texts)
    what = f"{len(files)} .txt files in {data_dir}" if len(files) > 1 else str(files[0])
    return text_dataset(request.name, [encode(text, vocabulary) for text in texts],
                        vocabulary=vocabulary, sequence_length=request.sequence_length,
                        target=request.target, seed=request.seed,
                        source=f"character corpus: {what}",
                        natural_groups=len(files) > 1)
