"""The notebooks run top to bottom in a Jupyter kernel, and show what a
learner should see there.

Each notebook is a jupytext "percent" source, ``notebooks/NN-name.py``.
The test converts it to a notebook, sets small sizes (:data:`QUICK`) in a
cell injected after its ``parameters`` cell (as papermill does), executes
every cell with nbclient in an ipykernel kernel that runs this Python, and
fails on the first error, naming the cell. MNIST comes from the folder
beside the repository through ``$FASTCONV_DATA``; nothing is downloaded.

Then it checks the outputs a learner relies on: figures inline as PNG (from
pyplot and from :mod:`fastconv.viz`), the model as an HTML table, training
progress as a bar.

jupytext, nbclient and ipykernel come with the ``test`` extra; without them
these tests are skipped, except under CI=true, where they fail.
"""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from fastconv import models, viz
from optional_imports import optional

REPO = Path(__file__).resolve().parents[1]
INSTALL = "pip install '.[test]'"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]-*.py"))
QUICK = {
    "01-sliding-window.py": {},
    "02-train-and-look-inside.py": {"LIMIT": 2000, "EPOCHS": 1, "VALIDATION": 1000, "TEST_LIMIT": 1000},
    # Numba's variants compile on their first call (half a minute in all on 2
    # cores with a cold cache); the same loop times them, and
    # tests/test_conv.py checks every one of them.
    "03-speed.py": {"BATCH": 8, "REPEAT": 2, "SKIP_BACKENDS": ("numba",)},
}
"""Per notebook, the settings that replace its ``parameters`` cell's: each
runs in seconds."""
SHOWS = {
    "01-sliding-window.py": {"image/png": 3},
    "02-train-and-look-inside.py": {"image/png": 8, "text/html": 1,
                                    "application/vnd.jupyter.widget-view+json": 1},
    "03-speed.py": {"image/png": 1},
}
"""Per notebook, how many outputs of each kind it must show at least:
01 draws 3 pyplot figures; 02 shows the model as a table, the training
progress as a widget (tqdm's, with ipywidgets) and 8 fastconv.viz figures
(curves, filters, 4 feature-map layers, confusion, errors); 03 one plot."""


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernel spec for this very Python (whatever "python3" names on the
    machine), found first through $JUPYTER_PATH."""
    optional("ipykernel", INSTALL)
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "fastconv-test"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fastconv test", "language": "python"}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(root))
        yield "fastconv-test"


def executed(path, settings, kernel_name, cwd):
    """The notebook of ``path``, with ``settings`` injected after its
    parameters cell, run top to bottom."""
    jupytext, nbclient, nbformat = (optional(name, INSTALL) for name in ("jupytext", "nbclient", "nbformat"))
    notebook = jupytext.read(path)
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: one cell must be tagged parameters, found {len(tagged)}"
    source = "\n".join(f"{name} = {value!r}" for name, value in settings.items())
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    client = nbclient.NotebookClient(notebook, kernel_name=kernel_name, timeout=300,
                                     resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name}: a cell failed:\n{error}")
    return notebook


def output_kinds(notebook) -> dict:
    """How many outputs of each MIME type the notebook shows."""
    counts = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            for kind in output.get("data", {}):
                counts[kind] = counts.get(kind, 0) + 1
    return counts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_notebook_runs_top_to_bottom_and_shows_its_pictures(path, kernel_name, mnist_dir, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("FASTCONV_DATA", str(mnist_dir))
    monkeypatch.setenv("FASTCONV_MNIST_URL", "http://127.0.0.1:9/")  # a closed port: never the network
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as Jupyter starts a kernel: the inline backend
    notebook = executed(path, QUICK[path.name], kernel_name, tmp_path)
    shown = output_kinds(notebook)
    for kind, least in SHOWS[path.name].items():
        assert shown.get(kind, 0) >= least, f"{path.name}: {shown.get(kind, 0)} {kind} outputs, expected {least}+"
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o["output_type"] == "error"]
    assert not errors


def test_every_notebook_has_quick_settings_and_a_place_in_the_readme():
    names = [path.name for path in NOTEBOOKS]
    assert len(names) >= 3 and set(QUICK) == set(names) == set(SHOWS)
    readme = (REPO / "README.md").read_text()
    learn = readme[readme.index("## Learn"):]
    learn = learn[:learn.index("\n## ", 1)]
    assert [name for name in names if f"notebooks/{name}" in learn] == names
    assert "fastconv-exercise list" in learn


# ------------------------------------------------ what Jupyter shows, without Jupyter


def test_a_model_shows_its_summary_as_an_html_table():
    model = models.build("cnn")
    html = model._repr_html_()
    header, *rows = model._summary_rows()  # the rows model.summary() prints
    assert html.startswith("<table>") and html.endswith("</table>")
    assert html.count("<tr>") == 1 + len(rows) == 2 + len(model.layers)  # header, input, each layer
    text = re.sub(r" style='[^']*'", "", html)  # the cells without their alignment
    assert "<tr>" + "".join(f"<th>{cell}</th>" for cell in header) + "</tr>" in text
    for row in rows:
        assert "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" in text
    assert "<td>conv2d_1 (Conv2D)</td><td>(None, 64, 11, 11)</td><td>18,496</td><td>8x8</td>" in text
    assert "225,034 params, 225,034 trainable, 0 non-trainable" in html


def test_training_progress_is_tqdm_auto_a_widget_in_jupyter():
    from fastconv import model as model_module
    from tqdm.auto import tqdm

    assert model_module.tqdm is tqdm


def test_a_viz_figure_shows_itself_as_png_at_its_own_size():
    pytest.importorskip("matplotlib")
    fig = viz.demo_figure(np.zeros((1, 12, 12), np.float32), backend="numpy", algorithm="reference",
                          size=(300, 200))
    png = fig._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (300, 200)


def test_the_notebooks_are_jupytext_percent_sources():
    for path in NOTEBOOKS:
        text = path.read_text()
        assert "format_name: percent" in text and '# %% tags=["parameters"]' in text, path.name
