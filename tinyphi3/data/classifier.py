"""The educational-value classifier: logistic regression on hashed words and word pairs.

Phi-3's web data is "heavily filtered ... according to the 'educational level'" (Phi-3 report §2).
The phi papers before it ("Textbooks Are All You Need", Gunasekar et al. 2023) had an LLM rate the
educational value of a small sample of pages and trained a small classifier on those ratings to
score all the others. We do the same in miniature, with one honest difference: our "annotator"
is the generator's `kind` tag of each page (`tinyphi3.data.web`), read on a labelled subset only
and turned into an educational value by `EDUCATIONAL_VALUE`:

    educational (and textbook)       1.0   explains, reasons, teaches
    narrative, forum, news           0.5   general language, little to learn
    boilerplate, spam, trivia        0.0   what the report filters out

Every page is then scored by the classifier, never by its tag: the filter is the classifier.

The model, step by step:
  features   words of the lower-cased text (every digit written 0, so "2-1" and "3-0" look
             alike) and adjacent word pairs; each feature f with count c adds s(f)·log(1+c) to
             bucket h(f) of a vector of `n_features` (the hashing trick, Weinberger et al. 2009:
             h, s from the CRC-32 of f, no vocabulary to store); the vector is scaled to length 1
  model      p = sigmoid(x·w + b), the predicted educational value in [0, 1]
  loss       cross-entropy with soft targets y in [0, 1], plus weight decay:
                 L = mean_i [log(1 + e^{z_i}) - y_i z_i] + (λ/2)·|w|²,   z_i = x_i·w + b
  gradient   dL/dz_i = (sigmoid(z_i) - y_i) / N,  dL/dw = Xᵀ dL/dz + λ w,  dL/db = Σ_i dL/dz_i
  training   minibatch gradient descent for a few epochs, the batches shuffled from a seed
"""

import json
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyphi3.errors import TinyPhi3Error

EDUCATIONAL_VALUE = {"educational": 1.0, "textbook": 1.0, "narrative": 0.5, "forum": 0.5,
                     "news": 0.5, "boilerplate": 0.0, "spam": 0.0, "trivia": 0.0}
N_FEATURES = 2 ** 18
FORMAT = "tinyphi3-educational-classifier"
WORD = re.compile(r"[a-z]+|0+|[^\sa-z0]")          # words, runs of digits, single symbols


class ClassifierError(TinyPhi3Error):
    """A classifier directory is missing or corrupt, or training data has no usable labels."""


# --- features: a sparse matrix in CSR form ------------------------------------------------------

@dataclass
class SparseRows:
    """N documents as sparse rows: row i holds values[indptr[i]:indptr[i+1]] at columns
    indices[indptr[i]:indptr[i+1]] of a [N, n_features] matrix (compressed sparse rows)."""
    indptr: np.ndarray      # int64 [N+1]
    indices: np.ndarray     # int64 [nnz]
    values: np.ndarray      # float32 [nnz]
    n_features: int

    @property
    def n_rows(self):
        return len(self.indptr) - 1

    def row_ids(self):
        """The row of every stored value: int64 [nnz]."""
        return np.repeat(np.arange(self.n_rows), np.diff(self.indptr))

    def take(self, rows):
        """The sub-matrix of the given rows, in that order."""
        starts, ends = self.indptr[rows], self.indptr[np.asarray(rows) + 1]
        picked = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]
                                or [np.zeros(0, int)])
        indptr = np.concatenate([[0], np.cumsum(ends - starts)])
        return SparseRows(indptr, self.indices[picked], self.values[picked], self.n_features)

    def dot(self, w):
        """X @ w: [N, F] @ [F] -> [N]."""
        return np.bincount(self.row_ids(), self.values * w[self.indices], minlength=self.n_rows)

    def t_dot(self, g):
        """Xᵀ @ g: [F, N] @ [N] -> [F]."""
        return np.bincount(self.indices, self.values * g[self.row_ids()], minlength=self.n_features)


def words(text):
    """Lower-cased words, digit runs (each digit written 0) and symbols:
    'Won 2-1!' -> won 0 - 0 !"""
    return WORD.findall(re.sub(r"[0-9]", "0", text.lower()))


def _hash(feature, n_features):
    """Bucket and sign of a feature: the low bits of its CRC-32 pick the bucket, bit 31 the sign."""
    h = zlib.crc32(feature.encode("utf-8"))
    return h % n_features, 1.0 - 2.0 * (h >> 31)


def featurize(texts, n_features=N_FEATURES):
    """Hashed word and word-pair features of each text, each row scaled to length 1 (see above)."""
    cache, indptr, indices, values = {}, [0], [], []
    for text in texts:
        tokens = words(text)
        counts = Counter(tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])])
        row = {}
        for feature, count in counts.items():
            if feature not in cache:
                cache[feature] = _hash(feature, n_features)
            bucket, sign = cache[feature]
            row[bucket] = row.get(bucket, 0.0) + sign * np.log1p(count)
        cols = np.fromiter(row.keys(), np.int64, len(row))
        vals = np.fromiter(row.values(), np.float64, len(row))
        norm = np.sqrt(np.sum(vals ** 2))
        indices.append(cols)
        values.append(vals / norm if norm > 0 else vals)
        indptr.append(indptr[-1] + len(row))
    if not values:
        return SparseRows(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32),
                          n_features)
    return SparseRows(np.asarray(indptr, np.int64), np.concatenate(indices),
                      np.concatenate(values).astype(np.float32), n_features)


# --- the model's math ---------------------------------------------------------------------------

def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))      # = 1 / (1 + e^-z), without overflow


def loss_and_grad(X, y, w, b, l2):
    """Soft-target logistic loss L = mean[log(1+e^z) - y z] + (l2/2)|w|², z = Xw + b, and its
    gradient (dL/dw, dL/db), written out by hand (see the module docstring)."""
    z = X.dot(w) + b                                     # [N]
    loss = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * np.dot(w, w)
    dz = (sigmoid(z) - y) / len(y)                       # [N]
    return loss, X.t_dot(dz) + l2 * w, np.sum(dz)


def roc_auc(scores, positive):
    """Area under the ROC curve: the chance that a random positive scores above a random negative
    (ties count half), from the Mann-Whitney U statistic of the ranks."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative examples")
    order = np.argsort(scores, kind="stable")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)   # 1-based; ties share the average
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def labels_of(documents):
    """The educational value of each document: its "label" field (a number in [0, 1]) when it has
    one, else `EDUCATIONAL_VALUE` of its "kind"; None where it has neither (unlabelled)."""
    labels = []
    for doc in documents:
        label = doc.get("label")
        if label is None and doc.get("kind") in EDUCATIONAL_VALUE:
            label = EDUCATIONAL_VALUE[doc["kind"]]
        if label is not None and not (isinstance(label, (int, float)) and 0 <= label <= 1):
            raise ClassifierError(f"a document's label must be a number in [0, 1], got {label!r}")
        labels.append(label)
    return labels


class EduClassifier:
    """Logistic regression over hashed features: `train`, then `score` texts in [0, 1]."""

    def __init__(self, weights, bias, n_features=N_FEATURES, info=None):
        self.weights = np.asarray(weights, np.float32)  # [F]
        self.bias = float(bias)
        self.n_features = n_features
        self.info = dict(info or {})                    # how it was trained, saved with it

    @classmethod
    def train(cls, texts, labels, epochs=4, batch_size=32, learning_rate=2.0, l2=1e-6,
              n_features=N_FEATURES, seed=0):
        """Fit on texts with educational values in [0, 1] by minibatch gradient descent."""
        if any(label is None for label in labels):
            raise ClassifierError("every training text needs a label: leave unlabelled documents "
                                  "out (labels_of gives None for them)")
        y = np.asarray(labels, np.float64)
        if len(texts) != len(y) or len(y) == 0:
            raise ClassifierError(f"need as many labels as texts (and at least one), got "
                                  f"{len(texts)} texts and {len(y)} labels")
        X = featurize(texts, n_features)
        w, b = np.zeros(n_features), 0.0
        rng = np.random.default_rng(seed)
        history = []
        for _ in range(epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), batch_size):
                rows = order[start:start + batch_size]
                _, dw, db = loss_and_grad(X.take(rows), y[rows], w, b, l2)
                w -= learning_rate * dw
                b -= learning_rate * db
            history.append(float(loss_and_grad(X, y, w, b, l2)[0]))
        info = {"documents": len(y), "epochs": epochs, "batch_size": batch_size,
                "learning_rate": learning_rate, "l2": l2, "seed": seed, "loss_per_epoch": history}
        return cls(w, b, n_features, info)

    def score(self, texts):
        """Predicted educational value of each text: float64 [N] in [0, 1]."""
        X = featurize(texts, self.n_features)
        return sigmoid(X.dot(self.weights.astype(np.float64)) + self.bias)

    def save(self, directory):
        """Write classifier.npz (weights, bias) and classifier.json (settings, training record)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "classifier.npz", weights=self.weights, bias=np.float64(self.bias))
        meta = {"format": FORMAT, "version": 1, "n_features": self.n_features,
                "features": "hashed words (digits as 0) and word pairs, log(1+count), unit length",
                "educational_value": EDUCATIONAL_VALUE, "training": self.info}
        (directory / "classifier.json").write_text(json.dumps(meta, indent=2) + "\n",
                                                   encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory):
        """Read a directory written by `save`; raise ClassifierError if anything is off."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ClassifierError(f"classifier directory {directory} does not exist (make one with "
                                  "`tinyphi3 data classifier train`)")
        try:
            meta = json.loads((directory / "classifier.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClassifierError(f"{directory} has no classifier.json: not a classifier "
                                  "directory") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ClassifierError(f"cannot read {directory / 'classifier.json'}: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ClassifierError(f"{directory / 'classifier.json'} does not describe a {FORMAT}")
        try:
            with np.load(directory / "classifier.npz") as arrays:
                weights, bias = arrays["weights"], float(arrays["bias"])
        except FileNotFoundError:
            raise ClassifierError(f"{directory} has no classifier.npz (the weights)") from None
        except Exception as err:        # a corrupt zip surfaces as one of several exception types
            raise ClassifierError(f"{directory / 'classifier.npz'} is corrupt: "
                                  f"{type(err).__name__}: {err}") from None
        n_features = meta.get("n_features")
        if weights.shape != (n_features,):
            raise ClassifierError(f"{directory}: weights of shape {weights.shape}, but "
                                  f"classifier.json says {n_features} features")
        return cls(weights, bias, n_features, meta.get("training"))


def evaluate(classifier, texts, labels):
    """Held-out numbers: AUC of educational (1.0) against the rest, AUC of everything kept by a
    light filter (0.5 and up) against junk (0.0), and the accuracy of the nearest of 0, 0.5, 1."""
    scores, labels = classifier.score(texts), np.asarray(labels, np.float64)
    nearest = np.round(scores * 2) / 2
    return {"documents": len(labels), "auc_educational": roc_auc(scores, labels == 1.0),
            "auc_not_junk": roc_auc(scores, labels > 0.0),
            "accuracy": float(np.mean(nearest == labels)),
            "majority_baseline": float(max(np.mean(labels == v) for v in np.unique(labels)))}
