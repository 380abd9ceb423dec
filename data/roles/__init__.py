"""The grammatical-role benchmark (prepare.py): a package, so that the experiment scripts import it normally."""
