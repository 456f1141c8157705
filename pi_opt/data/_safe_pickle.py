"""Restricted unpickling of the CIFAR "python version" batch files.

Only the globals needed to rebuild numpy arrays (and py2 byte strings) are allowed;
any other global -- ``os.system``, ``builtins.eval``, ... -- raises
:class:`~pi_opt.errors.UnsafeFormatError` *before* it could be called.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from pi_opt.errors import DatasetError, UnsafeFormatError

_CORE = "numpy._core" if hasattr(np, "_core") else "numpy.core"


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as emitted by py3 for ``bytes`` under protocol < 3; latin-1/utf-8 only."""
    if not isinstance(obj, str) or encoding.lower().replace("_", "-") not in (
        "latin1", "latin-1", "iso-8859-1", "utf-8", "utf8",
    ):
        raise UnsafeFormatError(f"pickle asks for codecs.encode with encoding {encoding!r}")
    return codecs.encode(obj, encoding, errors)


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("codecs", "encode"): _latin1_encode,
    }
    multiarray = importlib.import_module(f"{_CORE}.multiarray")
    numeric = importlib.import_module(f"{_CORE}.numeric")
    for mod in ("numpy.core", "numpy._core"):
        table[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


_ALLOWED = _allowed()


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only resolves numpy array reconstruction."""

    def __init__(self, file: io.BufferedIOBase, *, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only the allow-listed numpy reconstruction globals.

        Raises UnsafeFormatError for any other global.
        """
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFormatError(
                f"{self._source}: refusing to unpickle global '{module}.{name}'; only numpy "
                "array reconstruction is allowed in data set pickles (the file is not a genuine "
                "CIFAR batch, or was crafted to run code)",
                path=self._source,
                global_name=f"{module}.{name}",
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Always raises UnsafeFormatError: persistent ids are not allowed."""
        raise UnsafeFormatError(
            f"{self._source}: pickle uses persistent ids, which are not allowed"
        )


def safe_load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (``encoding="bytes"``).

    Raises :class:`UnsafeFormatError` for disallowed globals and :class:`DatasetError` for
    files that are missing or not valid pickles.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return RestrictedUnpickler(fh, source=str(p)).load()
    except UnsafeFormatError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{p}: file not found", path=str(p)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, OSError) as exc:
        raise DatasetError(
            f"{p}: not a valid pickle file ({type(exc).__name__}: {exc})", path=str(p)
        ) from None
