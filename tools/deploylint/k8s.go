package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// checkKubernetes builds deploy/k8s with kustomize, then decodes every
// object strictly into its Kubernetes API type: an unknown or duplicate
// field, a wrong type or an unknown kind fails. A few rules of this project
// follow (what the API server's own validation would catch is not all
// covered: see deploy/k8s/README.md).
func checkKubernetes(_ context.Context, root string) ([]string, error) {
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).
		Run(filesys.MakeFsOnDisk(), filepath.Join(root, "deploy/k8s"))
	if err != nil {
		return nil, err
	}
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	var (
		findings []string
		objects  []runtime.Object
	)
	for _, r := range resources.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		obj, _, err := strict.Decode(y, nil, nil)
		if err != nil {
			findings = append(findings, fmt.Sprintf("%s %s: %v", r.GetKind(), r.GetName(), err))
			continue
		}
		objects = append(objects, obj)
	}
	return append(findings, projectRules(objects)...), nil
}

// projectRules: references resolve (envFrom, selectors, the autoscaler's
// target), every long-running container has probes, requests and limits,
// runs as non-root on a read-only root filesystem and pauses in a preStop
// hook (so it leaves its Service's endpoints before it stops taking
// connections), and the pods' grace period outlasts that pause and
// SHUTDOWN_TIMEOUT.
func projectRules(objects []runtime.Object) []string {
	var (
		findings    []string
		configMaps  = map[string]*corev1.ConfigMap{}
		secrets     = map[string]bool{}
		deployments = map[string]*appsv1.Deployment{}
	)
	bad := func(format string, args ...any) { findings = append(findings, fmt.Sprintf(format, args...)) }
	for _, o := range objects {
		switch o := o.(type) {
		case *corev1.ConfigMap:
			configMaps[o.Name] = o
		case *corev1.Secret:
			secrets[o.Name] = true
		case *appsv1.Deployment:
			deployments[o.Name] = o
		}
	}
	shutdown := 30 * time.Second // the config default
	checkPod := func(what string, spec corev1.PodSpec, serving bool) {
		var stopping time.Duration // the longest preStop pause
		for _, c := range spec.Containers {
			for _, from := range c.EnvFrom {
				if from.ConfigMapRef != nil && configMaps[from.ConfigMapRef.Name] == nil {
					bad("%s: envFrom names ConfigMap %s, which is not in the build", what, from.ConfigMapRef.Name)
				}
				if from.SecretRef != nil && !secrets[from.SecretRef.Name] {
					bad("%s: envFrom names Secret %s, which is not in the build", what, from.SecretRef.Name)
				}
				if from.ConfigMapRef != nil && configMaps[from.ConfigMapRef.Name] != nil {
					if v, ok := configMaps[from.ConfigMapRef.Name].Data["SHUTDOWN_TIMEOUT"]; ok {
						d, err := time.ParseDuration(v)
						if err != nil {
							bad("%s: SHUTDOWN_TIMEOUT %q is not a duration", what, v)
						}
						shutdown = d
					}
				}
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				bad("%s: container %s needs cpu and memory requests and a memory limit", what, c.Name)
			}
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				bad("%s: container %s needs readOnlyRootFilesystem: true", what, c.Name)
			}
			nonRoot := spec.SecurityContext != nil && spec.SecurityContext.RunAsNonRoot != nil && *spec.SecurityContext.RunAsNonRoot
			if sc != nil && sc.RunAsNonRoot != nil {
				nonRoot = *sc.RunAsNonRoot
			}
			if !nonRoot {
				bad("%s: container %s needs runAsNonRoot: true", what, c.Name)
			}
			if serving && (c.LivenessProbe == nil || c.ReadinessProbe == nil) {
				bad("%s: container %s needs liveness and readiness probes", what, c.Name)
			}
			if serving {
				pause := preStopPause(c)
				if pause == 0 {
					bad("%s: container %s needs a preStop sleep, so it leaves its Service's endpoints before it stops", what, c.Name)
				}
				stopping = max(stopping, pause)
			}
		}
		if serving {
			grace := int64(30) // the Kubernetes default
			if spec.TerminationGracePeriodSeconds != nil {
				grace = *spec.TerminationGracePeriodSeconds
			}
			if time.Duration(grace)*time.Second <= stopping+shutdown {
				bad("%s: terminationGracePeriodSeconds %d does not outlast the preStop pause %s and SHUTDOWN_TIMEOUT %s", what, grace, stopping, shutdown)
			}
		}
	}
	for _, o := range objects {
		switch o := o.(type) {
		case *appsv1.Deployment:
			what := "Deployment " + o.Name
			sel := o.Spec.Selector
			if sel == nil || !labels.SelectorFromSet(sel.MatchLabels).Matches(labels.Set(o.Spec.Template.Labels)) {
				bad("%s: the selector does not match the pod template's labels", what)
			}
			checkPod(what, o.Spec.Template.Spec, true)
		case *batchv1.Job:
			checkPod("Job "+o.Name, o.Spec.Template.Spec, false)
		case *corev1.Service:
			matched := false
			for _, d := range deployments {
				if labels.SelectorFromSet(o.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) && len(o.Spec.Selector) > 0 {
					matched = true
					for _, p := range o.Spec.Ports {
						if p.TargetPort.StrVal != "" && !namesPort(d.Spec.Template.Spec, p.TargetPort.StrVal) {
							bad("Service %s: targetPort %s is not a port of Deployment %s", o.Name, p.TargetPort.StrVal, d.Name)
						}
					}
				}
			}
			if !matched {
				bad("Service %s selects no Deployment's pods", o.Name)
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			if ref := o.Spec.ScaleTargetRef; ref.Kind != "Deployment" || deployments[ref.Name] == nil {
				bad("HorizontalPodAutoscaler %s: target %s %s is not in the build", o.Name, ref.Kind, ref.Name)
			}
		}
	}
	return findings
}

// preStopPause is the container's preStop sleep, zero without one.
func preStopPause(c corev1.Container) time.Duration {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		return 0
	}
	return time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
}

func namesPort(spec corev1.PodSpec, name string) bool {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}
