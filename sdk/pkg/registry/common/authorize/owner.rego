# Only a registrant of a name may change or unregister it. input.owners are the identities that
# registered input.name (none while nobody holds it), input.registrant the one calling now, the
# signer of the first token. An endpoint has one owner, its first registrant. A network service
# is shared by the endpoints that offer it: anyone may register it (and becomes one of its
# owners), only an owner may unregister it.
package vwire.registry.owner

deny contains sprintf("%s %q is registered by %s; %s may not %s it", [input.kind, input.name, concat(", ", input.owners), who, verb]) if {
	count(input.owners) > 0
	not input.registrant in input.owners
	not open_to_all
	who := object.get({"": "a caller without a verified identity"}, input.registrant, input.registrant)
	verb := object.get({"register": "change"}, input.operation, input.operation)
}

open_to_all if {
	input.kind == "service"
	input.operation == "register"
}
