"""BPE over a SentencePiece vocabulary, as transformers (and so every engine that reads a
snapshot's tokenizer.json) runs it.

A SentencePiece BPE model is a list of pieces with scores. Two programs encode with it, and they
do not always agree:

  - the `sentencepiece` library merges, at each step, the adjacent pair whose merged piece has the
    best *score*;
  - transformers (the `tokenizers` library) merges the adjacent pair of lowest *rank* in a list of
    merges: the list in tokenizer.json, or, for a directory without one, the list transformers
    derives from tokenizer.model, where a merge's rank is the *id* of the piece it makes
    (`merge_ranks` below).

For a vocabulary whose scores fall as the ids rise (what a SentencePiece trainer writes) the two
are the same. Llama-2's vocabulary, and so Phi-3-mini's, is not one: its whitespace-run pieces
(`▁▁`, `▁▁▁▁`, ... up to 16 spaces) sit at low ids (259, 268, ...) with the score -1e9. transformers
merges runs of spaces first (`x  y` -> `▁x` `▁▁` `y`); the `sentencepiece` library merges them
last (`▁x` `▁` `▁y`). A deployed Phi-3 sees transformers' ids, so tinyphi3 follows transformers.

The whole text is one word: merges may cross spaces. A character that is no piece falls back to
its UTF-8 bytes (`<0xE6>` ...), which never merge. To stay fast on long text without changing the
result, the text is first cut where no merge can ever reach across: between two characters that
stand side by side in no piece of the vocabulary, since a merge only makes pieces of the
vocabulary. Each stretch is then encoded on its own (and remembered: text repeats).
"""

import heapq

from tinyphi3.errors import TokenizerError

CACHE_SIZE = 1 << 16                     # stretches remembered


def merge_ranks(pieces) -> dict:
    """{(left, right): rank} as transformers derives it from a vocabulary without scores.

    Every way of cutting a piece into two pieces of the vocabulary is a merge; merges are ranked by
    the id of the piece they make, then by the length of the left part and of the right part, then
    by the ids of the two parts (transformers' `generate_merges`).
    """
    vocab = {piece: i for i, piece in enumerate(pieces)}
    merges = []
    for merged, merged_id in vocab.items():
        cuts = [(merged[:k], merged[k:]) for k in range(1, len(merged))
                if merged[:k] in vocab and merged[k:] in vocab]
        cuts.sort(key=lambda cut: (vocab[cut[0]], vocab[cut[1]]))
        merges += [(merged_id, len(left), len(right), left, right) for left, right in cuts]
    merges.sort(key=lambda m: m[:3])                 # stable: the ids' order stays within a tie
    return {(left, right): rank for rank, (*_, left, right) in enumerate(merges)}


def merge_ranks_of_tokenizer_json(merges, vocab) -> dict:
    """{(left, right): rank} from tokenizer.json's model.merges ("a b" strings or [a, b] pairs)."""
    ranks = {}
    for rank, merge in enumerate(merges):
        pair = tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge)
        if len(pair) != 2 or not all(isinstance(p, str) and p in vocab for p in pair):
            raise TokenizerError(f"tokenizer.json: merge {rank} ({merge!r}) is not two pieces of "
                                 f"the vocabulary")
        if "".join(pair) not in vocab:
            raise TokenizerError(f"tokenizer.json: merge {rank} ({merge!r}) makes a piece that is "
                                 f"not in the vocabulary")
        ranks.setdefault(pair, rank)
    return ranks


class PieceBPE:
    """Encode normalized text ('▁' for spaces) into piece ids with ranked merges.

    pieces: the vocabulary, by id; ranks: {(left, right): rank}; byte_ids: the 256 ids of
    `<0x00>`..`<0xFF>` (byte fallback), or None; unk_id: the id for a character without a piece
    when there is no byte fallback.
    """

    def __init__(self, pieces, ranks, byte_ids=None, unk_id=0):
        self.vocab = {piece: i for i, piece in enumerate(pieces)}
        self.ranks, self.byte_ids, self.unk_id = ranks, byte_ids, unk_id
        # two characters that stand side by side in some piece: only there can a merge reach
        self._joined = {piece[k:k + 2] for piece in self.vocab for k in range(len(piece) - 1)}
        self._cache = {}

    def encode(self, text: str) -> list:
        ids, start = [], 0
        for k in range(1, len(text) + 1):
            if k == len(text) or text[k - 1:k + 1] not in self._joined:
                ids += self._encode_stretch(text[start:k])
                start = k
        return ids

    def _encode_stretch(self, text):
        if text in self._cache:
            return self._cache[text]
        ids = self._merge(text)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[text] = ids
        return ids

    def _merge(self, text):
        """Lowest rank first, leftmost first among equals, as a priority queue of candidate
        merges over a linked list of symbols (a merge invalidates the candidates beside it)."""
        symbols = [ch if ch in self.vocab else None for ch in text]   # None: no piece, no merge
        n = len(symbols)
        prev, nxt = list(range(-1, n - 1)), list(range(1, n + 1))
        alive = [True] * n
        heap = []

        def push(i):
            j = nxt[i]
            if j < n and symbols[i] is not None and symbols[j] is not None:
                rank = self.ranks.get((symbols[i], symbols[j]))
                if rank is not None:
                    heapq.heappush(heap, (rank, i, symbols[i], symbols[j]))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, left, right = heapq.heappop(heap)
            j = nxt[i] if alive[i] else n
            if j >= n or symbols[i] != left or symbols[j] != right:
                continue                                   # stale: a neighbour merged first
            symbols[i] = left + right
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prev[nxt[j]] = i
            if prev[i] >= 0:
                push(prev[i])
            push(i)
        ids = []
        for i in range(n):
            if not alive[i]:
                continue
            if symbols[i] is not None:
                ids.append(self.vocab[symbols[i]])
            elif self.byte_ids is not None:
                ids += [self.byte_ids[b] for b in text[i].encode("utf-8")]
            elif not ids or ids[-1] != self.unk_id:        # unknown characters in a row: one unk
                ids.append(self.unk_id)
        return ids
