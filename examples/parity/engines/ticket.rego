# The "ticket" policy of the engine cross-check (examples/parity/crosscheck.py),
# in Rego: the same decisions as ticket.cedar, on the rego filter's input
# document (filters/rego/README.md).
package portcullis

default allow := false

agent := input.principal.agent

user := input.principal.user

allow if {
	input.target.kind == "tool"
	agent.trust_domain == "demo.local"
	startswith(agent.path, "/ns/agents/sa/")
	not refused
}

allow if {
	input.target.kind == "tool"
	not agent
	user.issuer == "corp"
	user.scopes[_] == "tools:write"
	not refused
}

destructive if input.annotations.destructiveHint == true

destructive if startswith(input.target.name, "delete_")

# A numeric or object ticket is no string: startswith is undefined on it
# (OPA's non-strict builtin errors), so the ticket is missing.
needs_ticket if {
	input.kind == "call"
	destructive
	not startswith(object.get(input.arguments, "ticket", ""), "CHG-")
	not ops
}

# The ops group (the config's `data`).
ops if data.ops[_] == agent.spiffe_id

unconfirmed if {
	input.kind == "call"
	not destructive
	input.arguments.confirm == false
}

forced if {
	input.kind == "call"
	not destructive
	input.arguments.opts == {"force": true}
}

blocked if user.subject == "mallory"

refused if needs_ticket

refused if unconfirmed

refused if forced

refused if blocked

reason := "destructive tools need a ticket argument starting with CHG-" if needs_ticket
else := "the caller said confirm: false" if unconfirmed
else := "force is not allowed" if forced
else := "this user is blocked" if blocked
