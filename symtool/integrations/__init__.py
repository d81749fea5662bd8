"""Training-framework callbacks that write symtool reports while a model trains.

:mod:`symtool.integrations.lightning` (``pip install 'symtool[lightning]'``) and
:mod:`symtool.integrations.hf` (``pip install 'symtool[hf]'``) wrap
:class:`symtool.Monitor`; importing this package imports neither framework.
"""
