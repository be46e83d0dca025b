"""SGLang's and the routers' own argument parsers, run for real over sglang-gen's argvs.

Runs in its own virtualenv (``SGLGEN_SGLANG_PYTHON``; ``.ci/install.sh`` builds it from
``.ci/sglang-parser.txt``): the real ``sglang`` wheel and the light libraries its parser and
resolution import, with ``standin.py`` in place of torch and the GPU kernel packages.
"""
