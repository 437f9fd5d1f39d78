package main

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/gin-gonic/gin"
)

// webFiles is the web page served at /: plain HTML, CSS and JavaScript,
// embedded so the binary needs nothing else and there is no build step.
//
//go:embed web
var webFiles embed.FS

// openAPIDoc is the OpenAPI 3.1 description of this API, served at /openapi.json.
//
//go:embed openapi.json
var openAPIDoc []byte

// pageCSP lets the page load only its own files and talk only to this API:
// no inline script, nothing from another origin, never framed.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// serveWeb mounts the page and the API description.
func serveWeb(r *gin.Engine) {
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServer(http.FS(sub))
	serve := func(c *gin.Context, path string) {
		h := c.Writer.Header()
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache") // embedded files carry no modification time to revalidate
		c.Request.URL.Path = path
		files.ServeHTTP(c.Writer, c.Request)
	}
	r.GET("/", func(c *gin.Context) { serve(c, "/") })
	r.GET("/static/*path", func(c *gin.Context) { serve(c, c.Param("path")) })
	r.GET("/openapi.json", func(c *gin.Context) { c.Data(http.StatusOK, "application/json", openAPIDoc) })
}
