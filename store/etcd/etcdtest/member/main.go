// Command member runs one etcd member for etcdtest.StartProcesses: a
// process of its own, so that a test can freeze (SIGSTOP) or kill it as
// a real fault would, and built without the race detector, so that the
// cluster runs at a real member's speed under `go test -race`.
package main

import (
	"fmt"
	"os"

	"github.com/agentca/agentca/store/etcd/etcdtest"
)

func main() {
	etcdtest.RunMemberIfAsked()
	fmt.Fprintln(os.Stderr, "member: started without its configuration; etcdtest.StartProcesses starts it")
	os.Exit(2)
}
