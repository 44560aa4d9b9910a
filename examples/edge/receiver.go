//go:build ignore

// Receiver prints the webhooks execkit serve delivers, after verifying
// them. Run it beside the edge example:
//
//	go run examples/edge/receiver.go -secret whsec_...
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	"github.com/execkit/execkit/webhook"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:9090", "address to listen on")
	secretText := flag.String("secret", "", "the endpoint's signing secret, whsec_...")
	flag.Parse()
	secret, err := webhook.ParseSecret(*secretText)
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("POST /hooks", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if _, err := webhook.Verify(r.Header, body, time.Now(), 0, secret); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Printf("%s\n", body)
		w.WriteHeader(http.StatusNoContent)
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
