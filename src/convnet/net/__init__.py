"""Networks: Sequential and weight initialisation."""
