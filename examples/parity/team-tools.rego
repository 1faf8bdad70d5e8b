# The parity policy ("team-tools") in Rego (filters/rego).
package portcullis

default allow := false

agent := input.principal.agent.spiffe_id

# Only tools are policed.
allow if input.target.kind != "tool"

allow if agent == "spiffe://demo.local/ns/agents/sa/admin"

allow if {
	startswith(agent, "spiffe://demo.local/ns/agents/sa/")
	reader_tool
}

reader_tool if input.target.name == "echo"

reader_tool if startswith(input.target.name, "get_")

caller := object.get(input.principal, ["agent", "spiffe_id"], "anonymous")

reason := sprintf("team-tools: %s may not call %s", [caller, input.target.name])
