// Command child is the process of cmdtest's tests: it prints its environment when its second
// argument is "env", then exits with the code given as its first argument, or waits for SIGTERM and exits 0 ("wait"), or ignores it
// ("stubborn").
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM)
	if len(os.Args) > 2 && os.Args[2] == "env" {
		for _, kv := range os.Environ() {
			fmt.Println(kv)
		}
	}
	fmt.Fprintln(os.Stderr, "started")
	switch arg := os.Args[1]; arg {
	case "wait":
		<-signals
		fmt.Fprintln(os.Stderr, "stopping")
	case "stubborn":
		select {}
	default:
		code, _ := strconv.Atoi(arg)
		os.Exit(code)
	}
}
