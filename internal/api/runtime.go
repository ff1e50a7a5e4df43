package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Runtime routes (served by the orchestration runtime, internal/engine):
//
//	POST   /v1/projects          DeployRequest -> ProjectInfo
//	GET    /v1/projects          -> []ProjectInfo
//	DELETE /v1/projects/{name}   -> ActionResult
//	GET    /v1/jobs?status=&project=&limit= -> []JobInfo
//	GET    /v1/jobs/{id}         -> JobInfo
//
// GET /v1/jobs lists every unfinished job and, of the finished ones, the
// limit most recently finished (none or 0: all). A limit above 100,000,
// or a listing without one that would hold more jobs, is refused (400):
// the daemon does not build such a response in memory.

// DeployRequest carries a project's files (name -> content): one file
// with the whole project, or a directory's project.yaml plus
// orchestration files. Errors name file, line and field.
type DeployRequest struct {
	Files map[string]string `json:"files"`
}

// ProjectInfo describes a deployed project.
type ProjectInfo struct {
	Name           string              `json:"name"`
	Version        int                 `json:"version"`
	Deployed       time.Time           `json:"deployed"`
	Orchestrations []OrchestrationInfo `json:"orchestrations"`
	Connections    []ConnectionInfo    `json:"connections"`
}

// OrchestrationInfo is one orchestration of a project.
type OrchestrationInfo struct {
	Name    string `json:"name"`
	Starter string `json:"starter"` // "every 30s", "cron 0 2 * * *", "http async", "none"
}

// ConnectionInfo is one connection of a project; settings are redacted.
type ConnectionInfo struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Settings string `json:"settings"`
}

// JobInfo is a job's state.
type JobInfo struct {
	ID            string    `json:"id"`
	Project       string    `json:"project"`
	Version       int       `json:"version"`
	Orchestration string    `json:"orchestration"`
	Status        string    `json:"status"` // running, retry-wait, completed, failed
	Reason        string    `json:"reason,omitempty"`
	Step          string    `json:"step,omitempty"`    // the call in progress
	Attempt       int       `json:"attempt,omitempty"` // its attempt
	Resumptions   int       `json:"resumptions"`
	Checkpoints   int       `json:"checkpoints"`
	Node          string    `json:"node,omitempty"` // node that last checkpointed it
	Created       time.Time `json:"created"`
	Updated       time.Time `json:"updated"`
	Output        any       `json:"output,omitempty"`
}

// Deploy validates and deploys a project.
func (c *Client) Deploy(ctx context.Context, files map[string]string) (ProjectInfo, error) {
	var p ProjectInfo
	err := c.Do(ctx, http.MethodPost, "/v1/projects", DeployRequest{Files: files}, &p)
	return p, err
}

// Undeploy removes a project.
func (c *Client) Undeploy(ctx context.Context, project string) (ActionResult, error) {
	var r ActionResult
	err := c.Do(ctx, http.MethodDelete, "/v1/projects/"+url.PathEscape(project), nil, &r)
	return r, err
}

// Projects lists the deployed projects.
func (c *Client) Projects(ctx context.Context) ([]ProjectInfo, error) {
	var p []ProjectInfo
	err := c.Do(ctx, http.MethodGet, "/v1/projects", nil, &p)
	return p, err
}

// Jobs lists jobs, filtered by status and project when not empty.
func (c *Client) Jobs(ctx context.Context, status, project string) ([]JobInfo, error) {
	return c.JobsLimit(ctx, status, project, 0)
}

// JobsLimit is Jobs with, of the finished jobs, only the limit most
// recently finished (0: all). Unfinished jobs are always all listed.
func (c *Client) JobsLimit(ctx context.Context, status, project string, limit int) ([]JobInfo, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if status != "" {
		q.Set("status", status)
	}
	if project != "" {
		q.Set("project", project)
	}
	var j []JobInfo
	err := c.Do(ctx, http.MethodGet, "/v1/jobs?"+q.Encode(), nil, &j)
	return j, err
}

// Job fetches one job.
func (c *Client) Job(ctx context.Context, id string) (JobInfo, error) {
	var j JobInfo
	err := c.Do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id), nil, &j)
	return j, err
}
