# Only the registrant of a name may change or unregister it: input.owner is the identity that
# registered input.name ("" for a name nobody holds, and for network services, which have no
# owner), input.registrant the identity registering now, the signer of the first token.
package vwire.registry.owner

deny contains sprintf("%q is registered by %s; %s may not change or unregister it", [input.name, input.owner, who]) if {
	input.owner != ""
	input.owner != input.registrant
	who := object.get({"": "a caller without a verified identity"}, input.registrant, input.registrant)
}
