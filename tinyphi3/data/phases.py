"""Phase 1 and phase 2 of pre-training: what data each phase sees.

"Pre-training is performed in two disjoint and sequential phases; phase-1 comprises mostly of web
sources aimed at teaching the model general knowledge and language understanding. Phase-2 merges
even more heavily filtered webdata (a subset used in Phase-1) with some synthetic data that teach
the model logical reasoning and various niche skills." (Phi-3 report §2, Training Methodology)

In miniature, with the educational-value classifier's score s of each web page
(`tinyphi3.data.classifier`):

    phase 1   web pages with s >= light (0.2): junk out, general language in
    phase 2   web pages with s >= heavy (0.7), a subset of phase 1's, mixed with synthetic
              textbooks (`tinyphi3.data.textbooks`) so that they make `synthetic_share` of its words
    baseline  the raw web, unfiltered, cut to any word budget (for equal-compute comparisons)

Every function takes documents as dicts {"text": ..., ...} or plain strings, so your own text can
enter any stage; a page keeps its other fields ("kind" from the generator, if it has one).
Word counts (`len(text.split())`) stand in for token counts until the text is tokenized.
"""

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyphi3.data.documents import as_document, write_documents
from tinyphi3.data.web import KINDS
from tinyphi3.errors import TinyPhi3Error

LIGHT_THRESHOLD = 0.2       # phase 1 keeps pages scored at least this
HEAVY_THRESHOLD = 0.7       # phase 2 keeps pages scored at least this
SYNTHETIC_SHARE = 0.5       # share of phase 2's words that come from the synthetic textbooks
NO_KIND = "(no kind)"       # how the summary counts a user's pages that carry no "kind"


class PhaseError(TinyPhi3Error):
    """Thresholds or shares out of range, or pages without the score a filter needs."""


def word_count(doc):
    return len(as_document(doc)["text"].split())


def total_words(documents):
    return sum(word_count(doc) for doc in documents)


def score_documents(documents, classifier, batch_size=2000):
    """New dicts: each document with the classifier's "score" (its educational value) added."""
    docs = [dict(as_document(doc)) for doc in documents]
    for start in range(0, len(docs), batch_size):
        batch = docs[start:start + batch_size]
        for doc, score in zip(batch, classifier.score([d["text"] for d in batch])):
            doc["score"] = round(float(score), 6)
    return docs


def keep_scored_at_least(documents, threshold):
    """The scored documents whose "score" is at least `threshold`, in order."""
    if not 0.0 <= threshold <= 1.0:
        raise PhaseError(f"a score threshold must lie in [0, 1], got {threshold}")
    kept = []
    for doc in documents:
        doc = as_document(doc)
        if "score" not in doc:
            raise PhaseError("a page has no \"score\": score pages with the classifier first "
                             "(`score_documents`, or `tinyphi3 data classifier score`)")
        if doc["score"] >= threshold:
            kept.append(doc)
    return kept


def take_words(documents, n_words):
    """The first documents, in order, until they hold at least `n_words` words (all if None)."""
    taken, words = [], 0
    for doc in documents:
        if n_words is not None and words >= n_words:
            break
        doc = as_document(doc)
        taken.append(doc)
        words += word_count(doc)
    return taken


def unfiltered_documents(web, n_words=None):
    """The baseline: raw web pages, no filter, cut to `n_words` words (all of them if None)."""
    return take_words(web, n_words)


def phase1_documents(scored_web, light=LIGHT_THRESHOLD):
    """Phase 1: the lightly filtered web (general language and knowledge)."""
    return keep_scored_at_least(scored_web, light)


def _default_textbooks(seed):
    from tinyphi3.data.textbooks import generate_textbooks  # written beside this module
    # a stream: read only as far as needed
    return generate_textbooks(10 ** 9, seed=seed)


def textbooks_for(web_words, textbooks=None, synthetic_share=SYNTHETIC_SHARE, seed=0):
    """Synthetic documents to mix with `web_words` words of web so that they make
    `synthetic_share` of the words: read from `textbooks` (documents or strings, tagged kind
    "textbook" unless they have a kind; default: `generate_textbooks` with this seed) until they
    hold synthetic_share / (1 - synthetic_share) x web_words words, or until they run out."""
    if not 0.0 <= synthetic_share < 1.0:
        raise PhaseError(f"synthetic_share must lie in [0, 1), got {synthetic_share}")
    budget = web_words * synthetic_share / (1.0 - synthetic_share)
    if budget == 0:
        return []
    source = _default_textbooks(seed) if textbooks is None else textbooks
    tagged = ({"kind": "textbook", **as_document(doc)} for doc in source)
    return take_words(tagged, budget)


def shuffled(documents, seed=0):
    """The documents in an order drawn from the seed."""
    order = np.random.default_rng(seed).permutation(len(documents))
    return [documents[i] for i in order]


def phase2_documents(scored_web, textbooks=None, heavy=HEAVY_THRESHOLD,
                     synthetic_share=SYNTHETIC_SHARE, seed=0):
    """Phase 2: the heavily filtered web plus synthetic textbooks (`textbooks_for`), shuffled
    together; the textbooks make `synthetic_share` of the words unless they run out first."""
    web = keep_scored_at_least(scored_web, heavy)
    return shuffled(web + textbooks_for(total_words(web), textbooks, synthetic_share, seed), seed)


def _kind_order(kind):
    """Sort key: the web's kinds in `web.KINDS` order (educational first), then any others."""
    return (KINDS.index(kind), "") if kind in KINDS else (len(KINDS), kind)


def _by_kind(documents):
    """{kind: [documents, words]} of a document list."""
    counts = {}
    for doc in documents:
        entry = counts.setdefault(doc.get("kind", NO_KIND), [0, 0])
        entry[0] += 1
        entry[1] += word_count(doc)
    return counts


def summarize(scored_web, phase1, phase2_web, synthetic, light, heavy):
    """Documents and words of each phase, and what each filter kept of each kind of web page."""
    web, p1, p2 = _by_kind(scored_web), _by_kind(phase1), _by_kind(phase2_web)
    web_words, synthetic_words = total_words(phase2_web), total_words(synthetic)
    words2 = web_words + synthetic_words
    table = {kind: {"web_documents": n, "web_words": w,
                    "phase1_documents": p1.get(kind, [0, 0])[0],
                    "phase1_dropped": n - p1.get(kind, [0, 0])[0],
                    "phase2_documents": p2.get(kind, [0, 0])[0],
                    "phase2_dropped": n - p2.get(kind, [0, 0])[0]}
             for kind, (n, w) in sorted(web.items(), key=lambda item: _kind_order(item[0]))}
    return {
        "thresholds": {"light": light, "heavy": heavy},
        "web": {"documents": len(scored_web), "words": total_words(scored_web)},
        "phase1": {"documents": len(phase1), "words": total_words(phase1)},
        "phase2": {"documents": len(phase2_web) + len(synthetic), "words": words2,
                   "web_documents": len(phase2_web), "web_words": web_words,
                   "synthetic_documents": len(synthetic), "synthetic_words": synthetic_words,
                   "synthetic_share": synthetic_words / words2 if words2 else 0.0,
                   "synthetic_kinds": dict(Counter(d.get("kind", NO_KIND) for d in synthetic))},
        "by_kind": table,
    }


def format_summary(summary):
    """The summary as a table for the terminal."""
    rows = [f"{'web kind':<14}{'web docs':>10}{'phase 1 keeps':>16}{'phase 2 keeps':>16}"]
    for kind, row in summary["by_kind"].items():
        n = row["web_documents"]
        rows.append(f"{kind:<14}{n:>10}{row['phase1_documents']:>9} "
                    f"({row['phase1_documents'] / n:4.0%})"
                    f"{row['phase2_documents']:>9} ({row['phase2_documents'] / n:4.0%})")
    p1, p2, t = summary["phase1"], summary["phase2"], summary["thresholds"]
    rows += [f"phase 1 (score >= {t['light']}): {p1['documents']} documents, "
             f"~{p1['words']:,} words",
             f"phase 2 (score >= {t['heavy']}): {p2['documents']} documents, "
             f"~{p2['words']:,} words "
             f"= {p2['web_documents']} web pages + {p2['synthetic_documents']} synthetic "
             f"({p2['synthetic_share']:.0%} of the words)"]
    return "\n".join(rows)


@dataclass
class Phases:
    """The documents of both phases (dicts, web pages with their "score") and their summary."""
    phase1: list
    phase2: list
    summary: dict


def build_phases(web, classifier, textbooks=None, light=LIGHT_THRESHOLD, heavy=HEAVY_THRESHOLD,
                 synthetic_share=SYNTHETIC_SHARE, seed=0):
    """Score the web with the classifier, then build both phases and their summary."""
    if not 0.0 <= light <= heavy <= 1.0:
        raise PhaseError(f"need 0 <= light <= heavy <= 1 so that phase 2's web pages are a subset "
                         f"of phase 1's, got light={light}, heavy={heavy}")
    scored = score_documents(web, classifier)
    phase1 = phase1_documents(scored, light)
    phase2_web = keep_scored_at_least(scored, heavy)
    synthetic = textbooks_for(total_words(phase2_web), textbooks, synthetic_share, seed)
    phase2 = shuffled(phase2_web + synthetic, seed)
    return Phases(phase1, phase2, summarize(scored, phase1, phase2_web, synthetic, light, heavy))


def write_phases(phases, out_dir):
    """Write phase1.jsonl, phase2.jsonl and summary.json (plus summary.txt) to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_documents(phases.phase1, out / "phase1.jsonl")
    write_documents(phases.phase2, out / "phase2.jsonl")
    (out / "summary.json").write_text(json.dumps(phases.summary, indent=2) + "\n", encoding="utf-8")
    (out / "summary.txt").write_text(format_summary(phases.summary) + "\n", encoding="utf-8")
    return out
