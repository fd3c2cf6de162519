"""Stateless functional core: forward(...) -> (out, cache), backward(dout, cache) -> grads."""
