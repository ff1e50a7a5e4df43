package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// ProcOptions configure Host.Start.
type ProcOptions struct {
	Env    []string  // added to the lab process's environment
	Dir    string    // working directory
	Stdout io.Writer // nil discards
	Stderr io.Writer // nil discards
}

// Process is a program the lab started inside a host. The lab records it,
// and Close (or a later sweep, if this process dies) stops it.
type Process struct {
	Name string
	Host *Host
	PID  int

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// Start runs argv inside the host's namespace, in its own process group.
// The program is killed if the lab's process dies (Pdeathsig), and recorded
// so a sweep can stop it if that fails.
func (h *Host) Start(name string, argv []string, o ProcOptions) (*Process, error) {
	if len(argv) == 0 {
		return nil, errors.New("lab: Start: empty argv")
	}
	l := h.lab
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab: Start on a closed lab")
	}
	l.mu.Unlock()
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.NS}, argv...)...)
	cmd.Env = append(cmd.Environ(), o.Env...)
	cmd.Dir = o.Dir
	cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Pdeathsig is tied to the thread that forks. Go retires a thread only
	// when a goroutine exits while locked to it, which Host.Do does only
	// after a failed namespace switch; the registry sweep is the backstop.
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start %s on %s: %w", name, h.Name, err)
	}
	p := &Process{Name: name, Host: h, PID: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	st, _ := procStartTime(p.PID)
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	// Return once the process lives in the host's namespace (ip has done
	// its setns; the exec follows at once), so callers may rely on it.
	if err := h.waitInNamespace(p); err != nil {
		p.Kill()
		return nil, err
	}
	l.mu.Lock()
	l.procs[p] = true
	l.rec.Procs = append(l.rec.Procs, procRecord{PID: p.PID, StartTime: st, Name: h.Name + "/" + name})
	err := writeRecord(&l.rec)
	l.mu.Unlock()
	if err != nil {
		p.Kill()
		return nil, err
	}
	l.logf("lab: started %s on %s, pid %d", name, h.Name, p.PID)
	return p, nil
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("lab: %s (pid %d) has exited", p.Name, p.PID)
	}
	return syscall.Kill(p.PID, sig)
}

// Freeze stops the whole process group (SIGSTOP), as a hung host or a
// paused VM would look from outside.
func (p *Process) Freeze() error { return syscall.Kill(-p.PID, syscall.SIGSTOP) }

// Thaw resumes a frozen process group (SIGCONT).
func (p *Process) Thaw() error { return syscall.Kill(-p.PID, syscall.SIGCONT) }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit or ctx to end and returns its exit error.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.waitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop sends sig and waits up to grace for the process to exit, then kills
// the group. It returns the exit error of the process.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) error {
	if !p.Exited() {
		syscall.Kill(-p.PID, syscall.SIGCONT) // a frozen process cannot handle sig
		syscall.Kill(p.PID, sig)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			syscall.Kill(-p.PID, syscall.SIGKILL)
			<-p.done
		}
	}
	p.forget()
	return p.waitErr
}

// Kill kills the process group at once (SIGKILL) and waits for the exit.
func (p *Process) Kill() {
	if !p.Exited() {
		syscall.Kill(-p.PID, syscall.SIGKILL)
		<-p.done
	}
	p.forget()
}

func (p *Process) forget() {
	l := p.Host.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.procs, p)
	for i, r := range l.rec.Procs {
		if r.PID == p.PID {
			l.rec.Procs = append(l.rec.Procs[:i], l.rec.Procs[i+1:]...)
			break
		}
	}
	if !l.closed || l.rec.Persistent {
		writeRecord(&l.rec)
	}
}

// Do runs fn on an OS thread switched into the host's network namespace.
// Sockets fn opens belong to that namespace for their whole life, wherever
// they are used afterwards; goroutines fn starts do not inherit the
// namespace.
func (h *Host) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(h.NS)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: netns %s: %w", h.NS, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: enter %s: %w", h.NS, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime discards it when this
			// goroutine exits, so no other goroutine runs in the wrong
			// namespace.
			errc <- errors.Join(ferr, fmt.Errorf("lab: leave %s: %w", h.NS, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// waitInNamespace waits until process p has entered h's network namespace.
func (h *Host) waitInNamespace(p *Process) error {
	want, err := nsInode("/run/netns/" + h.NS)
	if err != nil {
		return fmt.Errorf("lab: netns %s: %w", h.NS, err)
	}
	path := fmt.Sprintf("/proc/%d/ns/net", p.PID)
	for i := 0; i < 5000; i++ {
		if got, err := nsInode(path); err == nil && got == want {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("lab: %s on %s exited at start: %v", p.Name, h.Name, p.waitErr)
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("lab: %s on %s did not enter namespace %s", p.Name, h.Name, h.NS)
}

func nsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
