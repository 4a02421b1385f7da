"""Click commands, one module each. Commands parse options, call one library function
and format its result; they never hold pipeline logic themselves."""
