package nsmport

// The ports in testdata import these modules, and this module requires them for the ports: go mod
// tidy skips testdata, so without these imports it would drop the requirements, and the ports
// would build only while another module of the workspace happens to require them (logrus reaches
// the workspace through nothing but a test of OPA's).
import (
	_ "github.com/edwarnicke/grpcfd"
	_ "github.com/kelseyhightower/envconfig"
	_ "github.com/sirupsen/logrus"
)
