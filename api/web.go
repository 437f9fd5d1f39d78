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

// serveWeb mounts the page and the API description.
func serveWeb(r *gin.Engine) {
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServer(http.FS(sub))
	page := func(c *gin.Context) { files.ServeHTTP(c.Writer, c.Request) }
	r.GET("/", page)
	r.GET("/static/*path", func(c *gin.Context) {
		c.Request.URL.Path = c.Param("path")
		files.ServeHTTP(c.Writer, c.Request)
	})
	r.GET("/openapi.json", func(c *gin.Context) { c.Data(http.StatusOK, "application/json", openAPIDoc) })
}
