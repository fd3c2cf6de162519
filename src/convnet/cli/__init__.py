"""The ``convnet`` command line: ``main.py`` dispatches to one module per verb."""
