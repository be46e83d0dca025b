"""The credential rules: which argument and variable names hold a credential, which argv words
argparse would read as an option, which URLs carry a credential.

One rule for validation (resolve, validate), log redaction (generator/redact.py, and the Slurm
job's copy bundled from this module's source by targets/slurm.py) and importers. Stdlib only
apart from the URL-userinfo pattern, which lives in generator.errors (its masking uses it too).
"""

from __future__ import annotations

import re

from generator.errors import URL_USERINFO as _URL_USERINFO

#: argument and variable names whose last word is one of these hold a credential: only
#: ``{env: NAME}`` is accepted for them (sglang: api_key, admin_api_key, ssl_keyfile_password;
#: routers: api_key, tenant_api_key, control_plane_api_keys, oracle_password, mesh_tls_key;
#: ``HF_TOKEN``, ``WANDB_API_KEY``, ``AWS_SECRET_ACCESS_KEY``, ``DB_PASSWD``). ``*_tokens`` and
#: ``tokenizer_*`` count or name tokens (``max_total_tokens``, ``tokenizer_path``): the last
#: word decides, and for arguments only a string can be a credential
#: (``bucket_time_to_first_token`` is a list of floats).
#: ``AWS_ACCESS_KEY_ID`` names a key (an identifier, shown in logs and ARNs), not a secret.
_SECRET_WORDS = frozenset({"key", "keys", "apikey", "apikeys", "token", "password", "passwd",
                           "passphrase", "secret", "credential", "credentials"})
#: abbreviations that are a credential only after a qualifier: ``DB_PASS``, ``DB_PWD``,
#: ``GITHUB_PAT`` (a personal access token), ``HF_AUTH``; alone they are other things (the
#: shell's ``PWD``)
_QUALIFIED_SECRET_WORDS = frozenset({"pass", "pwd", "pat", "auth"})
#: a last word that only says how the credential before it is written (``CLIENT_SECRET_VALUE``)
_VALUE_WORDS = frozenset({"value", "val", "str", "string", "raw", "plain", "b64", "base64"})
#: words run together (``OPENAIAPIKEY``, ``hftoken``): the last word ends in one of these. A bare
#: ``key`` is not enough there (``hockey``, ``monkey``); ``tokens`` does not end in ``token``.
_RUN_TOGETHER_SUFFIXES = ("apikey", "apikeys", "accesskey", "secretkey", "privatekey", "authkey",
                          "token", "password", "passwd", "passphrase", "secret", "credential",
                          "credentials")
#: camelCase and acronym boundaries: ``hfApiKey`` -> hf Api Key, ``HFToken`` -> HF Token
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
#: router arguments that hold a whole connection string, whose forms carry a password where no
#: URL check sees it (``redis://cache/0?password=x``, ``host=db user=u password=x``, Oracle's
#: ``user/password@host``): only ``{env: NAME}`` (the routers read them from the variables in
#: ``CREDENTIAL_ENV``)
CREDENTIAL_ARGS = frozenset({"redis_url", "postgres_db_url", "oracle_connect_descriptor"})
#: the variables sglang-router and smg read those arguments (and the Oracle password) from
#: (targets/common.py _ROUTER_ENV): a value for one of them in runtime.env is a literal connection string
CREDENTIAL_ENV = frozenset({"REDIS_URL", "POSTGRES_DB_URL", "ATP_DSN", "ATP_PASSWORD"})
#: a URL query parameter (``?password=x``, ``&api_key=x``, ``?token=x``): a credential when its
#: name is one by :func:`is_credential_name`
_URL_QUERY_PARAM = re.compile(r"://[^?#\s]*\?([^#\s]*)")


def url_has_credential(text: str) -> bool:
    """Whether a string holds a URL with userinfo or with a credential-named query parameter."""
    if _URL_USERINFO.search(text):
        return True
    for m in _URL_QUERY_PARAM.finditer(text):
        for param in re.split(r"[&;]", m.group(1)):
            name, eq, _ = param.partition("=")
            if eq and is_credential_name(name):
                return True
    return False


#: argv tokens every argparse version reads as a number, not as an option: Python 3.10-3.12's
#: ``_negative_number_matcher`` (3.13 also takes ``-1e3``; a host may run any of them)
_NEGATIVE_NUMBER = re.compile(r"-\d+|-\d*\.\d+")


def _name_words(name: str) -> list[str]:
    """Lower-case words of a name: split at ``_``, ``-`` and camelCase boundaries; trailing
    numbers (``AUTH_TOKEN_2``, ``TOKEN2``) and a last word saying how the value is written
    (``CLIENT_SECRET_VALUE``, ``BOT_TOKEN_B64``) dropped."""
    words = [w for w in _CAMEL.sub("_", name).lower().replace("-", "_").split("_") if w]
    while words and words[-1].isdigit():
        words.pop()
    if len(words) > 1 and words[-1] in _VALUE_WORDS:
        words.pop()
    while words and words[-1].isdigit():
        words.pop()
    if words:
        words[-1] = words[-1].rstrip("0123456789")
    return [w for w in words if w]


def last_word(name: str) -> str:
    """The last word of a name as written (``HF_TOKEN`` -> ``TOKEN``, ``hfApiKey`` -> ``Key``)."""
    words = [w for w in re.split(r"[-_]+", _CAMEL.sub("_", name)) if w]
    while len(words) > 1 and (words[-1].isdigit() or words[-1].lower() in _VALUE_WORDS):
        words.pop()
    last = words[-1].rstrip("0123456789") if words else name
    for suffix in _RUN_TOGETHER_SUFFIXES:  # OPENAIAPIKEY -> APIKEY
        if last.lower() not in _SECRET_WORDS and last.lower().endswith(suffix):
            return last[-len(suffix):]
    return last


def is_credential_name(name: str) -> bool:
    """Whether an argument or environment variable of this name holds a credential: the one
    rule for server and router arguments and ``runtime.env`` (importers can reuse it)."""
    words = _name_words(name)
    if not words:
        return False
    last = words[-1]
    return (last in _SECRET_WORDS or (len(words) > 1 and last in _QUALIFIED_SECRET_WORDS)
            or last.endswith(_RUN_TOGETHER_SUFFIXES))


def is_flag_shaped(token: str) -> bool:
    """Whether argparse would read this argv token as an option rather than a value: it starts
    with ``-``, is not ``-`` alone and not a negative number (``-1``, ``-0.5``)."""
    return token.startswith("-") and token != "-" and _NEGATIVE_NUMBER.fullmatch(token) is None

