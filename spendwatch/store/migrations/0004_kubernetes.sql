-- Kubernetes workloads (issue 16): the cluster, namespace and workload a cost line's cost ran in, as
-- EKS split cost allocation, GKE cost allocation and OpenCost report them. NULL for every other line.
-- Monitors name them as the dimensions cluster, namespace and workload (spendwatch.schema.DIMENSION_COLUMNS).
ALTER TABLE cost_lines ADD COLUMN k8s_cluster VARCHAR;
ALTER TABLE cost_lines ADD COLUMN k8s_namespace VARCHAR;
ALTER TABLE cost_lines ADD COLUMN k8s_workload VARCHAR;
