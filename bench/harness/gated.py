"""Part 2 placeholder while the gated path is not on main yet."""


def run(ctx, notes):
    notes.append("gated path not measured yet")
    return None
