# What both setup scripts share (sourced): a quiet pip, and the venv's create / check steps.
# The caller sets $venv and $python and defines `ready` (true when the venv has everything).

# pip here also reads two local package folders and warns about every name they lack.
pip_install() {
    "$venv/bin/pip" install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

# start_venv NAME: exits at once when the venv is ready; otherwise creates it.
start_venv() {
    if ready; then
        echo "$1 venv ready: $venv"
        exit 0
    fi
    start=$(date +%s)
    echo "creating $1 venv in $venv (about 1 minute)" >&2
    "$python" -m venv "$venv" || { echo "error: could not create a venv with $python" >&2; exit 1; }
}

# finish_venv NAME WHAT: checks the installed venv, and says how long it took.
finish_venv() {
    if ! ready; then
        echo "error: $venv was installed but $2 does not import" >&2
        exit 1
    fi
    echo "$1 venv ready: $venv ($(($(date +%s) - start)) s)"
}
