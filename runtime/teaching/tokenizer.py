"""A torch-free CLIP tokenizer that gives exactly open_clip's ``SimpleTokenizer`` ids (on-device enrolment).

Why this design: the byte-pair encoding itself is done by Hugging Face ``tokenizers`` (a well-kept Rust library),
loading a ``tokenizer.json`` that ``clipfsar export`` writes into the bundle from open_clip's own vocabulary and
merges (:func:`build_tokenizer_json`, export side). The text cleaning open_clip applies first (``ftfy.fix_text``,
HTML unescaping twice, whitespace collapsed with ``str.split``, ``str.lower``) is done here in Python with the same
calls, because ``tokenizers``' normalizers differ from those in corner cases (ftfy's mojibake repair, Python's
lower-casing of e.g. ``İ``). The pre-tokenizer is open_clip's regex (case-insensitive, as there), then the GPT-2
byte-to-unicode mapping (identical to CLIP's), then BPE with the ``</w>`` end-of-word suffix.

Token rows are ``[sot] + ids + [eot]`` zero-padded to ``context_length``; a longer row is cut to the context and
its last id set to ``eot`` (as open_clip does). Enrolment refuses such names instead (:meth:`check_fits`).

The two special strings ``<start_of_text>`` / ``<end_of_text>`` inside a text are refused (:class:`TokenizerError`):
open_clip maps them to the special ids, which no class name should do.

Example:
    >>> tok = ClipTokenizer.from_file("bundle/tokenizer.json", context_length=77)
    >>> tok(["a photo of waving a hand"]).shape
    (1, 77)
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError

SOT, EOT = "<start_of_text>", "<end_of_text>"
# open_clip's pattern (tokenizer.py), without its two special-token alternatives (refused before), case-insensitive
SPLIT_PATTERN = r"""(?i)'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
END_OF_WORD = "</w>"


class TokenizerError(ClipFsarError, ValueError):
    """A text cannot be tokenised as asked (too long for the context, a reserved token, no tokenizer file)."""


def clean_text(text: str) -> str:
    """open_clip's default ``clean='lower'``: ftfy, HTML-unescape twice, collapse whitespace, lower-case."""
    import ftfy
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


def build_tokenizer_json(encoder: Dict[str, int], merges: Sequence[Tuple[str, str]], path: Path) -> None:
    """Write a ``tokenizers`` file equivalent to open_clip's BPE (used by export; needs only ``tokenizers``).

    Args:
        encoder: token string -> id (open_clip ``SimpleTokenizer.encoder``, 49408 entries for CLIP).
        merges: the BPE merges in rank order (``sorted(bpe_ranks, key=bpe_ranks.get)``).
        path: the ``tokenizer.json`` to write.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    bpe = models.BPE(vocab=dict(encoder), merges=[tuple(m) for m in merges], end_of_word_suffix=END_OF_WORD,
                     continuing_subword_prefix="", fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),  # keep the matches
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.save(str(path))


class ClipTokenizer:
    """open_clip-identical tokenizer over a ``tokenizer.json`` (see the module docstring).

    Args:
        path: the ``tokenizer.json`` (from the bundle).
        context_length: tokens per row (the text encoder's L, e.g. 77).
        sot_token_id, eot_token_id: the start/end-of-text ids (49406/49407 for CLIP).
    Raises:
        TokenizerError: the file is missing or not a tokenizer file.
    """

    def __init__(self, path: Union[str, Path], context_length: int, sot_token_id: int, eot_token_id: int):
        from tokenizers import Tokenizer
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer file {path} not found")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises a plain Exception on a bad file
            raise TokenizerError(f"tokenizer file {path} is unreadable: {e}") from e
        self.context_length = int(context_length)
        self.sot_token_id, self.eot_token_id = int(sot_token_id), int(eot_token_id)

    @staticmethod
    def from_manifest(root: Path, entry: Dict) -> "ClipTokenizer":
        """From a bundle folder and its manifest's ``tokenizer`` entry (file, context_length, sot/eot ids)."""
        return ClipTokenizer(Path(root) / entry["file"], entry["context_length"], entry["sot_token_id"],
                             entry["eot_token_id"])

    def encode(self, text: str) -> List[int]:
        """One text -> its BPE ids, without start/end tokens and without truncation.

        Raises:
            TokenizerError: the cleaned text contains ``<start_of_text>`` or ``<end_of_text>``.
        """
        cleaned = clean_text(text)
        for special in (SOT, EOT):
            if special in cleaned:
                raise TokenizerError(f"text {text!r} contains the reserved token {special}")
        if not cleaned:
            return []
        return list(self._tok.encode(cleaned, add_special_tokens=False).ids)

    def count(self, text: str) -> int:
        """Tokens the text takes in a row, start and end tokens included."""
        return len(self.encode(text)) + 2

    def check_fits(self, text: str, what: str = "text") -> List[int]:
        """The text's ids, refusing one that does not fit the context (the rule export applies too).

        Raises:
            TokenizerError: ``count(text) > context_length``, with both numbers.
        """
        ids = self.encode(text)
        if len(ids) + 2 > self.context_length:
            raise TokenizerError(f"{what} {text!r} takes {len(ids) + 2} tokens; the text encoder's context is "
                                 f"{self.context_length} (start and end tokens included): shorten it")
        return ids

    def __call__(self, texts: Union[str, Iterable[str]]) -> np.ndarray:
        """Texts -> (N, context_length) int32 token rows, exactly as open_clip's tokenizer (truncating)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        out = np.zeros((len(texts), self.context_length), np.int32)
        for i, text in enumerate(texts):
            row = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(row) > self.context_length:
                row = row[:self.context_length]
                row[-1] = self.eot_token_id
            out[i, :len(row)] = row
        return out


def tokenizer_manifest_entry(file: str, context_length: int, sot: int, eot: int) -> Dict:
    """The manifest's ``tokenizer`` entry (the sha256 is filled in by the bundle writer)."""
    return json.loads(json.dumps({"file": file, "context_length": int(context_length), "sot_token_id": int(sot),
                                  "eot_token_id": int(eot), "clean": "lower", "kind": "open_clip-bpe"}))
