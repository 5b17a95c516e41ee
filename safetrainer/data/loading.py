"""One loader for built-in data, local files and Hub dataset ids."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, load_dataset

BUILTIN_PREFIX = "builtin:"
_BUILTIN_DIR = Path(__file__).parent / "builtin"
_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def builtin_names() -> list[str]:
    """Names of the data sets shipped with safetrainer (use them as `builtin:<name>`)."""
    return sorted(path.stem for path in _BUILTIN_DIR.glob("*.jsonl"))


def load_data(source: str, split: str = "train") -> Dataset:
    """Load a dataset from `builtin:<name>`, a local jsonl/json/csv/parquet file, or a Hub dataset id.

    Built-in names and local files go through the same `datasets` file builders; anything else is passed to
    `datasets.load_dataset(source, split=split)`.
    """
    if source.startswith(BUILTIN_PREFIX):
        name = source[len(BUILTIN_PREFIX) :]
        path = _BUILTIN_DIR / f"{name}.jsonl"
        if not path.is_file():
            raise ValueError(f"Unknown built-in dataset {source!r}; available: {', '.join(builtin_names())}.")
        return _load_file(path)
    path = Path(source).expanduser()
    if path.exists():
        return _load_file(path)
    if path.suffix.lower() in _FILE_BUILDERS:
        raise FileNotFoundError(f"Dataset file not found: {source}")
    return load_dataset(source, split=split)


def _load_file(path: Path) -> Dataset:
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a jsonl/json/csv/parquet file or a Hub dataset id.")
    builder = _FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(
            f"Unsupported data file extension {path.suffix!r} ({path}); allowed: {', '.join(_FILE_BUILDERS)}."
        )
    if path.stat().st_size == 0:  # the file builders fail on an empty file with an obscure StopIteration
        return Dataset.from_dict({})
    return load_dataset(builder, data_files=str(path), split="train")
