"""Export the labels of every image as CSV.

Columns: ``path`` (relative to the images folder), ``role`` (``train``: labelled by the expert and
used to fit, ``test``: the held-out test split, ``pool``: no expert label), ``expert_label`` (empty when none),
``predicted`` (the networks' consensus, see :mod:`.review`; a single network's prediction when only one
has predictions), ``confidence``, ``final_label`` (the expert's label when there is one, else the
prediction), ``cluster`` (per network with clusters, ``network:cluster`` joined by ``;``), ``votes``
(``network=label`` joined by ``;``) and ``flagged`` (1 when the image is in the review queue: the
networks or a network's predictors disagree, or the confidence is low).

Safe to open in a spreadsheet: every field is quoted (``csv.QUOTE_ALL``), so a path holding a comma,
a quote, a line feed or a carriage return stays one cell of one row; and a text cell that starts with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return, which Excel, LibreOffice and Google Sheets
would run as a formula ("CSV injection"), is written with a single quote ``'`` in front, as OWASP
advises: a file named ``=HYPERLINK(...).png`` shows as ``'=HYPERLINK(...).png``, never as a link.
Numbers (``confidence``, ``flagged``) are written as they are.
"""
import csv
import io
from pathlib import Path

import numpy as np

from . import atomic
from .errors import UserError

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """``cell`` with a ``'`` in front when a spreadsheet would read it as a formula."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


COLUMNS = ["path", "role", "expert_label", "predicted", "confidence", "final_label", "cluster", "votes", "flagged"]


def export_csv(logdir, out, networks=None, low_confidence=0.6):
    """Write the CSV to ``out`` (atomically); return a summary."""
    from . import results, review

    inp = results.load_inputs(logdir, features=False)
    if networks is None:
        networks = results.networks_with(logdir, "predictions")
    n = len(inp.image_ids)
    consensus = np.full(n, None, dtype=object)
    conf = np.full(n, None, dtype=object)
    votes = [""] * n
    clusters = [""] * n
    flagged = np.zeros(n, dtype=bool)
    notes = []
    if networks:
        classes, probas, cps, cl, notes, _stale = review._network_predictions(logdir, list(networks), inp.image_ids)
        d = review.doubt_from_probas(probas, cps, low_confidence, review.truth_codes(inp.labels, inp.roles, classes))
        consensus = np.array(classes, dtype=object)[d["consensus"]]
        conf = d["confidence"]
        flagged = d["flagged"] & (inp.roles == "pool")
        votes = [";".join(f"{net}={classes[d['votes'][i, j]]}" for j, net in enumerate(networks)) for i in range(n)]
        clusters = [";".join(f"{net}:{c[i]}" for net, c in cl.items()) for i in range(n)]
    else:
        notes.append(f"no predictions yet: run `nipgboard predict {logdir} --network ID` to fill 'predicted'")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    w.writerow(COLUMNS)
    for i in range(n):
        expert = inp.labels[i]
        pred = consensus[i]
        text = [str(v) for v in (inp.paths[i], inp.roles[i], expert or "", pred or "")]
        w.writerow([neutralise(v) for v in text]
                   + ["" if conf[i] is None else f"{float(conf[i]):.4f}", neutralise(str(expert or pred or "")),
                      neutralise(clusters[i]), neutralise(votes[i]), int(flagged[i])])
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{out} is a folder: give a file name for the CSV, e.g. {out / 'labels.csv'}")
    atomic.write_text(out, buf.getvalue())
    return {"out": str(out), "rows": n, "networks": list(networks), "expert_labelled": int(sum(1 for v in inp.labels if v)),
            "predicted": int(sum(1 for v in consensus if v)), "flagged": int(flagged.sum()), "notes": notes}

