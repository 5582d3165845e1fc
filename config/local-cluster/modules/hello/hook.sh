# user hook of the local cluster's test module `hello`: runs in the container, as the user,
# before each command of a job or `shifter` run with --module=hello
echo "hello-hook uid=$(id -u) cwd=$(pwd) image=$SHIFTER_IMAGE module_env=$HELLO_MODULE"
