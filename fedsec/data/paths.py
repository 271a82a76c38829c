"""Checks on the ``data_dir`` a user passes, shared by the loaders of on-disk datasets."""
from __future__ import annotations

from pathlib import Path

from .dataset import DataError


def data_folder(data_dir: Path, dataset: str, expects: str) -> Path:
    """``data_dir`` itself, once it is known to be an existing folder."""
    if not data_dir.exists():
        raise DataError(f"{dataset}: data_dir (data_args.data_cache_dir) {data_dir} does not exist; expected a folder "
                        f"holding {expects}")
    if not data_dir.is_dir():
        raise DataError(f"{dataset}: data_dir (data_args.data_cache_dir) {data_dir} is not a folder; expected a folder "
                        f"holding {expects}")
    return data_dir


def first_holding(folders: list[Path], file_name: str) -> Path | None:
    """The first of ``folders`` that holds ``file_name`` (a file or folder), else None."""
    return next((folder for folder in folders if (folder / file_name).exists()), None)
