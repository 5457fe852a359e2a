"""The pretraining cache key's code part: what the code does counts, its comments, docstrings and layout do not."""

from strategies.cache import TRAINING_PATH, code_fingerprint, code_tree

PLAIN = "def f(x):\n    return x + 1\n\n\nclass A:\n    n = 2\n"
DOCUMENTED = '''"""A module."""

# a comment
def f(x):  # another
    """Add one."""
    return (
        x + 1
    )


class A:
    """A class."""

    n = 2
'''


def test_docstrings_comments_and_layout_do_not_count():
    assert code_tree(DOCUMENTED) == code_tree(PLAIN)


def test_what_the_code_does_counts():
    assert code_tree(PLAIN.replace("x + 1", "x + 2")) != code_tree(PLAIN)
    assert code_tree(PLAIN.replace("n = 2", "n = '2'")) != code_tree(PLAIN)
    # a string that is not the first statement is code, not a docstring
    assert code_tree("def f():\n    x = 1\n    'kept'\n") != code_tree("def f():\n    x = 1\n")


def test_a_function_that_is_only_a_docstring_keeps_a_body():
    assert code_tree('def f():\n    """Nothing."""\n') == code_tree("def f():\n    pass\n")


def test_the_fingerprint_covers_the_training_path():
    assert "fed_opc/client_app.py" in TRAINING_PATH and len(code_fingerprint()) == 64
