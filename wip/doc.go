// Package wip is the replicated work-in-progress store (placeholder doc, replaced below).
package wip
