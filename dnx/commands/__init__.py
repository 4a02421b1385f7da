"""Click commands, one module each. Commands parse options, call one library function
and format its result; they never hold pipeline logic themselves."""


def int_list(text: str, flag: str) -> tuple[int, ...]:
    """``"1,4"`` -> ``(1, 4)``; raise InputError (one line, exit 1) otherwise."""
    from dnx.errors import InputError

    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise InputError(f"{flag} {text!r} is not a comma list of positive integers; e.g. {flag} 1,4")
    return values
