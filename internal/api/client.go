package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
)

// Client talks to a daemon's API socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}
	return &Client{socket: path, hc: &http.Client{Transport: tr}}
}

// Error is an error answer from the daemon.
type Error struct {
	Status int
	Body   ErrorBody
}

func (e *Error) Error() string { return e.Body.Error }

// Do sends a request with an optional JSON body and decodes the JSON answer
// into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://tandemd"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach tandemd at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(b, &e.Body) != nil || e.Body.Error == "" {
			e.Body.Error = fmt.Sprintf("tandemd answered %s", resp.Status)
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decoding tandemd's answer: %w", err)
		}
	}
	return nil
}

// Status fetches the pair status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.Do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}

// Events fetches events after sequence number after.
func (c *Client) Events(ctx context.Context, after uint64) ([]Event, error) {
	var evs []Event
	err := c.Do(ctx, http.MethodGet, "/v1/events?after="+strconv.FormatUint(after, 10), nil, &evs)
	return evs, err
}

// Switchover asks the active to hand over to the passive.
func (c *Client) Switchover(ctx context.Context) (ActionResult, error) {
	var r ActionResult
	err := c.Do(ctx, http.MethodPost, "/v1/admin/switchover", struct{}{}, &r)
	return r, err
}

// Maintenance turns maintenance mode on or off.
func (c *Client) Maintenance(ctx context.Context, on bool) (ActionResult, error) {
	var r ActionResult
	err := c.Do(ctx, http.MethodPost, "/v1/admin/maintenance", MaintenanceRequest{On: &on}, &r)
	return r, err
}

// AckAlarm acknowledges a latched alarm, which clears it.
func (c *Client) AckAlarm(ctx context.Context, id string) (ActionResult, error) {
	var r ActionResult
	err := c.Do(ctx, http.MethodPost, "/v1/admin/ack-alarm", AckAlarmRequest{Alarm: id}, &r)
	return r, err
}

// Backup takes a backup of the WIP store now.
func (c *Client) Backup(ctx context.Context) (BackupInfo, error) {
	var b BackupInfo
	err := c.Do(ctx, http.MethodPost, "/v1/admin/backup", struct{}{}, &b)
	return b, err
}

// Verify reads this node's whole WIP store back now.
func (c *Client) Verify(ctx context.Context) (VerifyResult, error) {
	var v VerifyResult
	err := c.Do(ctx, http.MethodPost, "/v1/admin/verify", struct{}{}, &v)
	return v, err
}

// Backups lists the backups in this node's backup directory, oldest first.
func (c *Client) Backups(ctx context.Context) ([]BackupInfo, error) {
	var bs []BackupInfo
	err := c.Do(ctx, http.MethodGet, "/v1/backups", nil, &bs)
	return bs, err
}

// ForcePromote promotes this node even if its data may be stale.
func (c *Client) ForcePromote(ctx context.Context, acknowledgeDataLoss bool) (ActionResult, error) {
	var r ActionResult
	err := c.Do(ctx, http.MethodPost, "/v1/admin/force-promote", ForcePromoteRequest{AcknowledgeDataLoss: acknowledgeDataLoss}, &r)
	return r, err
}
