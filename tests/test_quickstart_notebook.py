"""examples/quickstart.ipynb: committed without outputs, and it runs top to bottom in a fresh
Jupyter kernel (nbclient + ipykernel, the ``notebook`` extra), every result cell showing its
pictures inline and nothing spamming the output. About 25 s on an idle 2-core CPU (several
times that on a busy one) with the real InceptionV1 (marker ``slow``); skipped with the reason
where no kernel can start."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import HANG_GUARD_S, REPO

NOTEBOOK = REPO / "examples" / "quickstart.ipynb"
# a guard against a hung kernel, not a speed limit (see conftest.HANG_GUARD_S)
CELL_TIMEOUT_S = 900


def test_the_committed_notebook_has_no_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "the quickstart has no code cells"
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count")]
    assert dirty == [], f"code cells {dirty} hold outputs: clear them before committing"


def _client(nbformat, nbclient):
    """A notebook client with its kernel started in examples/ (as Jupyter starts one beside
    the notebook), finding this checkout's featviz; a skip naming the reason when no kernel
    can start here."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    try:
        client.km = client.create_kernel_manager()
        client.start_new_kernel()
        client.start_new_kernel_client()
    except Exception as err:  # no kernelspec, no ipykernel, no sockets: nothing to test here
        _stop(client)
        pytest.skip(f"a Jupyter kernel cannot start here ({type(err).__name__}: {err})")
    return nb, client


def _stop(client) -> None:
    """Shut the kernel down, unless ``execute`` already did (it clears ``km`` when done)."""
    if client.km is not None:
        client._cleanup_kernel()


@pytest.mark.slow
def test_the_quickstart_runs_and_shows_its_results(monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebook]'")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[notebook]'")
    pytest.importorskip("ipykernel", reason="pip install -e '.[notebook]'")
    # the kernel imports this checkout's featviz, installed or not
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO)] + ([path] if path else [])))
    nb, client = _client(nbformat, nbclient)
    start = time.perf_counter()
    try:
        client.execute()  # a cell that raises fails the test with its traceback
    finally:
        _stop(client)
    seconds = time.perf_counter() - start
    assert seconds < HANG_GUARD_S
    shown = [c for c in nb.cells if c.cell_type == "code"
             and any("text/html" in o.get("data", {}) for o in c.outputs)]
    # channel, diverse batch, class, projection, inversion: each with an inline picture
    assert len(shown) >= 5
    for cell in shown:
        page = next(o.data["text/html"] for o in cell.outputs if "text/html" in o.get("data", {}))
        assert 'src="data:image/png;base64,' in page and len(page) < 2_000_000
    # nothing but progress bars and the one line on the weights reach the text streams
    streams = [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type == "stream"]
    assert not any("Warning" in s or "Traceback" in s for s in streams), streams
    print(f"quickstart.ipynb ran in {seconds:.0f} s")
    if os.environ.get("FEATVIZ_KEEP_NOTEBOOK"):  # the executed copy, for the README's figure
        nbformat.write(nb, os.environ["FEATVIZ_KEEP_NOTEBOOK"])
