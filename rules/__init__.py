"""The reference rule packs, shipped inside the wheel as ``retention._rules``.

Name them with ``--rules builtin:marketplace`` (see retention/resources.py).
"""
