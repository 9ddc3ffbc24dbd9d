package dispatch

import (
	"context"
	"errors"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/wfclient"
)

// isAlreadyStarted tells whether a start was refused because the workflow
// id has a run already.
func isAlreadyStarted(err error) bool {
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	return errors.As(err, &already)
}

// alreadyStarted handles a start refused because the workflow id has a
// run. For a first generation that run is this message's own (a
// redelivered message): a duplicate. For a retried notification it is
// either this generation's run, started already, or an earlier
// generation's run still open (its cancel or failure not yet handled: a
// slow worker, a backlog of workflow tasks). That run owns nothing any
// more: every write of its activities checks its generation, so it would
// only end SUPERSEDED. It is terminated, by its run id, and this
// generation starts now, instead of the message coming back every second.
func (s *Starter) alreadyStarted(ctx context.Context, ws *workflowStart) (string, error) {
	gen := ws.n.Generation
	if gen == 0 {
		return resultDuplicate, nil
	}
	superseded, err := s.endSupersededRun(ctx, ws.wfID, string(ws.n.Channel), gen)
	if err != nil {
		return "", err
	}
	if superseded {
		err := s.execute(ctx, ws)
		switch {
		case err == nil:
			return resultStarted, nil
		case !isAlreadyStarted(err):
			return "", err
		}
	}
	// This generation's run started already (a redelivered message), or
	// another earlier run started meanwhile (handled again).
	running, err := s.runningGeneration(ctx, ws.wfID)
	if err != nil {
		return "", err
	}
	if running < gen {
		return "", fmt.Errorf("workflow %s: the run of generation %d is still open; generation %d starts after it", ws.wfID, running, gen)
	}
	return resultDuplicate, nil
}

// runningGeneration answers the generation of the open run of wfID (0 for
// a first run, which carries no memo).
func (s *Starter) runningGeneration(ctx context.Context, wfID string) (int, error) {
	d, err := s.temporal.DescribeWorkflow(ctx, wfID, "")
	if err != nil {
		return 0, fmt.Errorf("describing workflow %s: %w", wfID, err)
	}
	return wfclient.RunGeneration(d.RawResponse.GetWorkflowExecutionInfo())
}

// endSupersededRun terminates the open run of wfID when it is of a
// generation before gen, by its run id (never a run of gen itself, which a
// redelivered message finds), and reports whether it did, or found the run
// closed meanwhile: either way gen may start now.
func (s *Starter) endSupersededRun(ctx context.Context, wfID, channel string, gen int) (bool, error) {
	d, err := s.temporal.DescribeWorkflow(ctx, wfID, "")
	if err != nil {
		return false, fmt.Errorf("describing workflow %s: %w", wfID, err)
	}
	info := d.RawResponse.GetWorkflowExecutionInfo()
	if info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return true, nil
	}
	running, err := wfclient.RunGeneration(info)
	if err != nil || running >= gen {
		return false, err
	}
	runID := info.GetExecution().GetRunId()
	err = s.temporal.TerminateWorkflow(ctx, wfID, runID, fmt.Sprintf("superseded by generation %d", gen))
	var notFound *serviceerror.NotFound
	if err != nil && !errors.As(err, &notFound) { // NotFound: it closed meanwhile
		return false, fmt.Errorf("terminating run %s of workflow %s (generation %d, superseded by %d): %w", runID, wfID, running, gen, err)
	}
	s.count(channel, resultSuperseded)
	s.log.Info("ended the run of an earlier generation, still open", zap.String("workflow_id", wfID), zap.String("run_id", runID),
		zap.Int("generation", running), zap.Int("superseded_by", gen))
	return true, nil
}
