"""Recipe files for the recipe tests: YAML text written into `tmp_path`."""

import textwrap


def write(tmp_path, text, name="recipe.yaml"):
    """Writes the dedented `text` as UTF-8 to `tmp_path / name`; returns
    the path as a string."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)
