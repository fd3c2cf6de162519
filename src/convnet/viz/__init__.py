"""Look inside a model: a self-contained HTML page (:mod:`~convnet.viz.page`) and PNG plots
(:mod:`~convnet.viz.plots`).

Usage: ``from convnet.viz import build_data, render_html, visualize``.
"""

from convnet.viz.page import (
    Sample,
    TestEval,
    build_data,
    evaluate_test,
    layer_activations,
    read_metrics_log,
    render_html,
    serve,
    visualize,
    write_page,
)

__all__ = [
    "Sample", "TestEval", "build_data", "evaluate_test", "layer_activations",
    "read_metrics_log", "render_html", "serve", "visualize", "write_page",
]
